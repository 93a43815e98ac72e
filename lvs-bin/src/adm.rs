//! The operator's side of lvs: ipvsadm over the control socket.
//!
//! [`ControlPlane`] is what the daemon embeds: it owns the [`RuleSet`] (the single writer of the
//! rules), publishes each change as one atomic [`ServiceTable::publish`], answers every
//! ipvsadm command line with ipvsadm's own texts, streams (stdout or stderr) and exit codes,
//! and keeps the FULLNAT local addresses configured with DPVS's `--add-laddr`/`--del-laddr`.
//! The client half ([`run_client`]) is `lvs adm …` and `lvsadm …`.
//!
//! Exit codes, as ipvsadm 1.31 sets them:
//! - 0: success (listings, `-h`, `-v`);
//! - 2: a command line ipvsadm's own checks refuse (its `fail(2, …)`), and "Can't initialize
//!   ipvs" when the daemon cannot be reached;
//! - 255: the kernel (here: the rule set) refused the command (`-A` of an existing service,
//!   `-a` on a missing one …: libipvs returns -1 and `main` returns it), popt errors
//!   (unknown option, missing argument) and "Try `ipvsadm -h'" (`tryhelp_exit(-1)`);
//! - 1: `-L` of one missing service (`list_service` exits 1), and `-G` of one.
//!
//! Embedding it in the daemon:
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use std::time::Instant;
//! use lvs_bin::adm::{ControlPlane, serve};
//! use lvs_core::{ServiceTable, Time, conn::ConnTable};
//!
//! let start = Instant::now();
//! let clock = move || Time::from_millis(start.elapsed().as_millis() as u64);
//! let services = Arc::new(ServiceTable::new()); // the workers load() it per packet
//! let conns = Arc::new(ConnTable::with_capacity(1 << 20)); // shared with the workers
//! let mut plane = ControlPlane::new(services.clone(), conns.clone(), clock);
//! plane.on_local_addresses_changed(|lips| { /* rebuild the LipPool from `lips` */ });
//! plane.load_rules("-A -t 10.0.0.1:80 -s rr\n").expect("rules file");
//! let plane = Arc::new(Mutex::new(plane));
//! let _server = serve(plane.clone(), "/run/lvs/lvs.sock".as_ref()).expect("socket");
//! loop {
//!     std::thread::sleep(std::time::Duration::from_secs(2));
//!     plane.lock().unwrap().tick(clock()); // rate estimators, for `-L --rate`
//! }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lvs_core::conn::{ConnTable, listing};
use lvs_core::rules::parse::TRY_HELP;
use lvs_core::rules::{
    BatchError, Command, ListOptions, Outcome, ParseError, RuleError, RuleSet, Timeouts, format_list,
    format_save, format_timeouts, parse_args, views,
};
use lvs_core::service::ServiceKey;
use lvs_core::stats::estimate_all;
use lvs_core::{ServiceTable, Time};
use lvs_dataplane::xlate::lip::LipPool;

use crate::control::{self, ControlServer, Request, Response};

/// Exit code of a refused command line (ipvsadm's `fail(2, …)`).
pub const EXIT_USAGE: u32 = 2;
/// Exit code when the rules refused a command (libipvs's -1 returned from `main`).
pub const EXIT_REFUSED: u32 = 255;
/// Exit code of `-L` / `-G` of a missing service (`list_service`'s `exit(1)`).
pub const EXIT_LIST: u32 = 1;

/// The IPVS version lvs reports (the kernel's `IP_VS_VERSION_CODE`, 1.2.1).
pub const IPVS_VERSION: &str = "1.2.1";

/// `ipvsadm -v`: ipvsadm's version line, naming lvs as what it was "compiled with".
pub fn version_text() -> String {
    format!(
        "ipvsadm v1.31 2019/12/24 (compiled with lvs {} and IPVS v{IPVS_VERSION})\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `ipvsadm -h`: the usage text (the version line first), with `program` as the command name.
pub fn usage_text(program: &str) -> String {
    let p = program;
    let mut s = version_text();
    s.push_str("Usage:\n");
    for form in [
        "-A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]",
        "-D virtual-service",
        "-C",
        "-R",
        "-S [-n]",
        "-a|e virtual-service -r server-address [options]",
        "-d virtual-service -r server-address",
        "-L|l [virtual-service] [options]",
        "-Z [virtual-service]",
        "--set tcp tcpfin udp",
        "-P|Q virtual-service -z local-address",
        "-G [virtual-service]",
        "-h",
    ] {
        s.push_str(&format!("  {p} {form}\n"));
    }
    s.push_str(
        "\nCommands:\n\
Either long or short options are allowed.\n\
  --add-service     -A        add virtual service with options\n\
  --edit-service    -E        edit virtual service with options\n\
  --delete-service  -D        delete virtual service\n\
  --clear           -C        clear the whole table\n\
  --restore         -R        restore rules from stdin (all lines or none)\n\
  --save            -S        save rules to stdout\n\
  --add-server      -a        add real server with options\n\
  --edit-server     -e        edit real server with options\n\
  --delete-server   -d        delete real server\n\
  --list            -L|-l     list the table\n\
  --zero            -Z        zero counters in a service or all services\n\
  --set tcp tcpfin udp        set connection timeout values\n\
  --add-laddr       -P        add a FULLNAT local address to a service\n\
  --del-laddr       -Q        delete a FULLNAT local address from a service\n\
  --get-laddr       -G        list the FULLNAT local addresses\n\
  --help            -h        display this help message\n\
  --version         -v        display the version\n\n\
virtual-service:\n\
  --tcp-service|-t  service-address   service-address is host[:port]\n\
  --udp-service|-u  service-address   service-address is host[:port]\n\
  --sctp-service    service-address   service-address is host[:port]\n\
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n\n\
Options:\n\
  --ipv6         -6                   fwmark entry uses IPv6\n\
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,\n\
                                      the default scheduler is wlc.\n\
  --persistent   -p [timeout]         persistent service\n\
  --netmask      -M netmask           persistent granularity mask\n\
  --real-server  -r server-address    server-address is host (and port)\n\
  --gatewaying   -g                   gatewaying (direct routing) (default)\n\
  --ipip         -i                   ipip encapsulation (tunneling)\n\
  --masquerading -m                   masquerading (NAT)\n\
  --fullnat                           full NAT (source rewritten to a local address)\n\
  --tun-type      type                ipip (the only tunnel type lvs supports)\n\
  --weight       -w weight            capacity of real server\n\
  --u-threshold  -x uthreshold        upper threshold of connections\n\
  --l-threshold  -y lthreshold        lower threshold of connections\n\
  --laddr        -z local-address     FULLNAT local address (with -P and -Q)\n\
  --connection   -c                   output of current IPVS connections\n\
  --timeout                           output of timeout (tcp tcpfin udp)\n\
  --daemon                            output of daemon information\n\
  --stats                             output of statistics information\n\
  --rate                              output of rate information\n\
  --exact                             expand numbers (display exact values)\n\
  --thresholds                        output of thresholds information\n\
  --persistent-conn                   output of persistent connection info\n\
  --nosort                            disable sorting output of service/server entries\n\
  --sort                              does nothing, for backwards compatibility\n\
  --ops          -o                   one-packet scheduling\n\
  --numeric      -n                   numeric output of addresses and ports\n\
  --sched-flags  -b flags             scheduler flags (comma-separated)\n",
    );
    s
}

/// The exit code ipvsadm gives a command-line error: popt's own errors and `tryhelp_exit`
/// return -1 (255), every `fail(2, …)` exits 2. An unknown scheduler is the kernel's ENOENT
/// in ipvsadm (the rules parser reports it early), so it is 255 too.
pub fn parse_error_code(e: &ParseError) -> u32 {
    let m = e.0.as_str();
    if m == TRY_HELP
        || m.ends_with(": unknown option")
        || m.ends_with(": missing argument")
        || m == "Scheduler or persistence engine not found"
    {
        EXIT_REFUSED
    } else {
        EXIT_USAGE
    }
}

/// The exit code of a refused command.
fn rule_error_code(e: &RuleError) -> u32 {
    match e {
        RuleError::Parse(p) => parse_error_code(p),
        _ => EXIT_REFUSED,
    }
}

fn ok(stdout: String) -> Response {
    Response {
        code: 0,
        stdout,
        stderr: String::new(),
    }
}

fn fail(code: u32, msg: impl fmt::Display) -> Response {
    Response {
        code,
        stdout: String::new(),
        stderr: format!("{msg}\n"),
    }
}

/// A LIP command (DPVS's ipvsadm `-P`, `-Q`, `-G`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum LaddrCommand {
    Add(ServiceKey, IpAddr),
    Del(ServiceKey, IpAddr),
    Get(Option<ServiceKey>),
}

/// Recognises DPVS's local-address commands; `None` when `args` is another command.
fn parse_laddr(args: &[String]) -> Option<Result<LaddrCommand, ParseError>> {
    let first = args.first()?.as_str();
    let (kind, name) = match first {
        "-P" | "--add-laddr" => (0, "add-laddr"),
        "-Q" | "--del-laddr" => (1, "del-laddr"),
        "-G" | "--get-laddr" => (2, "get-laddr"),
        _ => return None,
    };
    Some((|| {
        let mut service: Vec<String> = Vec::new();
        let mut laddr: Option<IpAddr> = None;
        let mut it = args[1..].iter();
        while let Some(a) = it.next() {
            let (opt, inline) = match a.split_once('=') {
                Some((o, v)) if o.starts_with("--") => (o, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = |what: &str| -> Result<String, ParseError> {
                match inline.clone().or_else(|| it.next().cloned()) {
                    Some(v) => Ok(v),
                    None => Err(ParseError(format!("{what}: missing argument"))),
                }
            };
            match opt {
                "-t" | "--tcp-service" | "-u" | "--udp-service" | "--sctp-service" | "-f"
                | "--fwmark-service" => {
                    if !service.is_empty() {
                        return Err(ParseError("multiple 'service-address' options specified".into()));
                    }
                    let v = value(opt)?;
                    service = vec![opt.to_string(), v];
                }
                "-6" | "--ipv6" => service.push(opt.to_string()),
                "-z" | "--laddr" => {
                    if laddr.is_some() {
                        return Err(ParseError("multiple 'local-address' options specified".into()));
                    }
                    let v = value(opt)?;
                    // DPVS reads it with parse_service: an address, a port is ignored.
                    let addr = v
                        .parse::<IpAddr>()
                        .ok()
                        .or_else(|| v.parse::<SocketAddr>().ok().map(|s| s.ip()))
                        .or_else(|| {
                            v.rsplit_once(':')
                                .and_then(|(h, p)| p.parse::<u16>().ok().and(h.parse::<IpAddr>().ok()))
                        })
                        .ok_or_else(|| ParseError("illegal local address".into()))?;
                    laddr = Some(addr);
                }
                // DPVS names the interface the LIP lives on; lvs answers ARP for its LIPs on
                // every served interface, so the name is accepted and not needed.
                "-F" | "--ifname" => {
                    value(opt)?;
                }
                _ if opt.starts_with('-') => return Err(ParseError(format!("{opt}: unknown option"))),
                _ => return Err(ParseError(format!("unexpected argument {opt}"))),
            }
        }
        let key = if service.is_empty() {
            None
        } else {
            // The service spelling and its checks are ipvsadm's: let the rules parser read it.
            let mut zero = vec!["-Z".to_string()];
            zero.extend(service);
            match parse_args(&zero)? {
                Command::Zero(k) => k,
                _ => None,
            }
        };
        let need = |opt: &str| {
            ParseError(format!(
                "You need to supply the '{opt}' option for the '{name}' command"
            ))
        };
        match kind {
            0 | 1 => {
                let key = key.ok_or_else(|| need("service-address"))?;
                let addr = laddr.ok_or_else(|| need("local-address"))?;
                Ok(if kind == 0 {
                    LaddrCommand::Add(key, addr)
                } else {
                    LaddrCommand::Del(key, addr)
                })
            }
            _ => {
                if laddr.is_some() {
                    return Err(ParseError(format!(
                        "Illegal 'local-address' option with the '{name}' command"
                    )));
                }
                Ok(LaddrCommand::Get(key))
            }
        }
    })())
}

/// Called with every configured LIP when that set changes.
type LipHook = Box<dyn FnMut(&[IpAddr]) + Send>;

/// The control plane the daemon embeds: rules, publication, listings, LIPs.
///
/// One writer: the daemon keeps it behind a mutex (see [`serve`]) and calls
/// [`handle`](Self::handle) for each control request and [`tick`](Self::tick) every 2 s.
pub struct ControlPlane {
    rules: RuleSet,
    services: Arc<ServiceTable>,
    conns: Arc<ConnTable>,
    clock: Box<dyn Fn() -> Time + Send>,
    table_size: u32,
    /// FULLNAT local addresses per service, in service configuration order.
    lips: Vec<(ServiceKey, Vec<IpAddr>)>,
    lip_hook: Option<LipHook>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("services", &self.rules.services.len())
            .field("table_size", &self.table_size)
            .field("lips", &self.lips)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ControlPlane {
    /// A control plane over the daemon's published services and connection table. `clock`
    /// is the daemon's packet-path clock (connection expiry in `-L -c` is read against it).
    /// The rule set starts as the table's current snapshot.
    pub fn new(
        services: Arc<ServiceTable>,
        conns: Arc<ConnTable>,
        clock: impl Fn() -> Time + Send + 'static,
    ) -> ControlPlane {
        let rules = RuleSet {
            services: services.snapshot().configs(),
        };
        ControlPlane {
            rules,
            services,
            conns,
            clock: Box::new(clock),
            table_size: lvs_core::rules::DEFAULT_TABLE_SIZE,
            lips: Vec::new(),
            lip_hook: None,
        }
    }

    /// Sets the connection-table size shown in the `-L` header ("size=…"; default 4096, the
    /// kernel's default hash size).
    pub fn with_table_size(mut self, size: u32) -> ControlPlane {
        self.table_size = size;
        self
    }

    /// Calls `hook` with every configured LIP (all services, first-seen order, no duplicates)
    /// each time `-P`/`-Q`/`-D`/`-C` changes that set: the daemon rebuilds its [`LipPool`].
    pub fn on_local_addresses_changed(&mut self, hook: impl FnMut(&[IpAddr]) + Send + 'static) {
        self.lip_hook = Some(Box::new(hook));
    }

    /// The rules as configured.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The published services.
    pub fn services(&self) -> &Arc<ServiceTable> {
        &self.services
    }

    /// The connection table.
    pub fn conns(&self) -> &Arc<ConnTable> {
        &self.conns
    }

    /// Every configured LIP (all services, first-seen order, no duplicates).
    pub fn local_addresses(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = Vec::new();
        for (_, l) in &self.lips {
            for a in l {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
        }
        all
    }

    /// The LIPs of one service, in the order they were added.
    pub fn local_addresses_of(&self, key: &ServiceKey) -> &[IpAddr] {
        self.lips
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&[], |(_, l)| l.as_slice())
    }

    /// A fresh pool over [`local_addresses`](Self::local_addresses) handing out ports
    /// `min_port..=max_port`.
    pub fn lip_pool(&self, min_port: u16, max_port: u16) -> LipPool {
        LipPool::new(&self.local_addresses(), min_port, max_port)
    }

    /// Runs the rate estimators of every service and destination (the kernel's 2 s timer):
    /// the daemon calls it every 2 s; `-L --rate` shows the result.
    pub fn tick(&mut self, now: Time) {
        estimate_all(&self.services.load(), now);
    }

    /// [`tick`](Self::tick) at the control plane's clock.
    pub fn tick_now(&mut self) {
        let now = (self.clock)();
        self.tick(now);
    }

    /// Loads a rules file (ipvsadm-save output or ipvsadm command lines) all or nothing,
    /// then publishes it: the daemon's `--rules` at start and on SIGHUP.
    pub fn load_rules(&mut self, text: &str) -> Result<(), BatchError> {
        self.restore_batch(text).map(|_| ())
    }

    /// Applies one parsed command as `-A`…`-d`, `-Z`, `--set` do (for callers inside the
    /// daemon, e.g. health checks quiescing a real server with `-e … -w 0`).
    pub fn apply(&mut self, cmd: Command) -> Result<Outcome, RuleError> {
        let mut next = self.rules.clone();
        let outcome = next.apply(cmd)?;
        match &outcome {
            Outcome::Changed => self.commit(next),
            Outcome::Zero(key) => self.zero(key.as_ref()),
            Outcome::SetTimeouts(t) => self.conns.set_timeouts(t.tcp, t.tcp_fin, t.udp),
            _ => {}
        }
        Ok(outcome)
    }

    /// Installs `next` as the rule set and publishes it; LIPs of removed services go too.
    fn commit(&mut self, next: RuleSet) {
        self.rules = next;
        self.services.publish(&self.rules.services);
        let before = self.lips.len();
        let rules = &self.rules;
        self.lips.retain(|(k, _)| rules.service(k).is_some());
        if self.lips.len() != before {
            self.lips_changed();
        }
    }

    fn lips_changed(&mut self) {
        let all = self.local_addresses();
        if let Some(h) = self.lip_hook.as_mut() {
            h(&all);
        }
    }

    fn zero(&self, key: Option<&ServiceKey>) {
        let set = self.services.load();
        for svc in set.services() {
            if key.is_none_or(|k| *k == svc.config.key) {
                svc.stats.zero();
                for d in &svc.dests {
                    d.state.stats.zero();
                }
            }
        }
    }

    /// Answers one control request at the control plane's clock.
    pub fn handle(&mut self, req: &Request) -> Response {
        let now = (self.clock)();
        self.handle_at(req, now)
    }

    /// Answers one control request: `req.args` is an ipvsadm command line without the
    /// program name, `req.stdin` the restore input for `-R`.
    pub fn handle_at(&mut self, req: &Request, now: Time) -> Response {
        let args = &req.args;
        match args.first().map(String::as_str) {
            // ipvsadm without arguments lists the table.
            None => return self.list(&ListOptions::default(), now),
            Some("-h" | "--help") => return ok(usage_text("ipvsadm")),
            Some("-v" | "--version") => return ok(version_text()),
            _ => {}
        }
        if let Some(l) = parse_laddr(args) {
            return match l {
                Ok(cmd) => self.laddr(cmd),
                Err(e) => fail(parse_error_code(&e), e),
            };
        }
        let cmd = match parse_args(args) {
            Ok(c) => c,
            Err(e) => return fail(parse_error_code(&e), e),
        };
        if let Command::List(opts) = &cmd
            && let Some(k) = &opts.service
            && self.rules.service(k).is_none()
        {
            // list_service: ipvs_get_service fails, prints the error, exit(1).
            return fail(EXIT_LIST, RuleError::NoSuchService);
        }
        match self.apply(cmd) {
            Ok(Outcome::List(opts)) => self.list(&opts, now),
            Ok(Outcome::Save { .. }) => ok(format_save(&views(&self.services.load()))),
            Ok(Outcome::Restore) => self.restore(&req.stdin),
            Ok(_) => ok(String::new()),
            Err(e) => fail(rule_error_code(&e), e),
        }
    }

    fn list(&self, opts: &ListOptions, now: Time) -> Response {
        if opts.connection {
            let entries: Vec<_> = self.conns.iter(now).collect();
            return ok(listing(&entries, opts.persistent_conn));
        }
        if opts.timeout {
            let (tcp, tcp_fin, udp) = self.conns.timeouts().get();
            return ok(format_timeouts(&Timeouts { tcp, tcp_fin, udp }));
        }
        if opts.daemon {
            // No connection sync daemon: ipvsadm prints nothing for stopped daemons.
            return ok(String::new());
        }
        match format_list(&views(&self.services.load()), opts, self.table_size) {
            Ok(text) => ok(text),
            Err(e) => fail(EXIT_LIST, e),
        }
    }

    /// `-R`: the whole input or nothing.
    fn restore(&mut self, input: &str) -> Response {
        match self.restore_batch(input) {
            Ok(out) => ok(out),
            Err(BatchError { line, error }) => {
                let text = input.lines().nth(line.saturating_sub(1)).unwrap_or("");
                Response {
                    code: rule_error_code(&error),
                    stdout: String::new(),
                    stderr: format!(
                        "{error}\nrestore: line {line}: {}\nrestore: nothing applied, the rules are unchanged\n",
                        text.trim()
                    ),
                }
            }
        }
    }

    /// Applies a restore input to a copy, publishes it if every line passed, then runs the
    /// other effects (`-Z`, `--set`, listings) in order; returns what they printed.
    /// Replaces the whole rule set with the rules file `text`, all or nothing (SIGHUP): as
    /// `ipvsadm -C` followed by `ipvsadm -R`, published as one step. Destinations that stay
    /// keep their counters and connections.
    pub fn replace_rules(&mut self, text: &str) -> Result<(), BatchError> {
        let mut next = RuleSet::new();
        next.apply_batch(text)?;
        if next != self.rules {
            self.commit(next);
        }
        Ok(())
    }

    fn restore_batch(&mut self, input: &str) -> Result<String, BatchError> {
        let mut next = self.rules.clone();
        let effects = next.apply_batch(input)?;
        if next != self.rules {
            self.commit(next);
        }
        let mut out = String::new();
        let now = (self.clock)();
        for effect in effects {
            match effect {
                Outcome::Zero(key) => self.zero(key.as_ref()),
                Outcome::SetTimeouts(t) => self.conns.set_timeouts(t.tcp, t.tcp_fin, t.udp),
                Outcome::List(opts) => out.push_str(&self.list(&opts, now).stdout),
                Outcome::Save { .. } => out.push_str(&format_save(&views(&self.services.load()))),
                Outcome::Changed | Outcome::Restore => {}
            }
        }
        Ok(out)
    }

    fn laddr(&mut self, cmd: LaddrCommand) -> Response {
        match cmd {
            LaddrCommand::Add(key, addr) => {
                if self.rules.service(&key).is_none() {
                    return fail(EXIT_REFUSED, RuleError::ServiceNotDefined);
                }
                let i = match self.lips.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        self.lips.push((key, Vec::new()));
                        self.lips.len() - 1
                    }
                };
                if self.lips[i].1.contains(&addr) {
                    return fail(EXIT_REFUSED, "Local address already exists");
                }
                self.lips[i].1.push(addr);
                self.lips_changed();
                ok(String::new())
            }
            LaddrCommand::Del(key, addr) => {
                if self.rules.service(&key).is_none() {
                    return fail(EXIT_REFUSED, RuleError::ServiceNotDefined);
                }
                let Some(i) = self.lips.iter().position(|(k, l)| *k == key && l.contains(&addr)) else {
                    return fail(EXIT_REFUSED, "No such local address");
                };
                self.lips[i].1.retain(|a| *a != addr);
                if self.lips[i].1.is_empty() {
                    self.lips.remove(i);
                }
                self.lips_changed();
                ok(String::new())
            }
            LaddrCommand::Get(Some(key)) => {
                if self.rules.service(&key).is_none() {
                    return fail(EXIT_LIST, RuleError::NoSuchService);
                }
                ok(self.format_laddrs(&[key]))
            }
            LaddrCommand::Get(None) => {
                let keys: Vec<ServiceKey> = self.rules.services.iter().map(|s| s.key).collect();
                ok(self.format_laddrs(&keys))
            }
        }
    }

    /// DPVS's `-G` listing: the title once, then per service `VIP:VPORT TOTAL` and one row per
    /// LIP with its port conflicts (lvs's pool never hands out a used pair: always 0) and the
    /// connections currently using it.
    fn format_laddrs(&self, keys: &[ServiceKey]) -> String {
        let mut out = String::new();
        if keys.is_empty() {
            return out;
        }
        let now = (self.clock)();
        let conns: Vec<_> = self.conns.iter(now).filter(|c| c.local.is_some()).collect();
        // printf("%-20s %-8s %-20s %-10s %-10s\n", "VIP:VPORT", "TOTAL", "SNAT_IP", ...)
        out.push_str(&format!(
            "{:<20} {:<8} {:<20} {:<10} {:<10}\n",
            "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS"
        ));
        for key in keys {
            let lips = self.local_addresses_of(key);
            let name = match key {
                ServiceKey::Addr { addr, port, .. } => match addr {
                    IpAddr::V4(a) => format!("{a}:{port}"),
                    IpAddr::V6(a) => format!("[{a}]:{port}"),
                },
                // DPVS prints a fwmark service's zero address and port.
                ServiceKey::Fwmark { family, .. } => match family {
                    lvs_core::service::AddrFamily::Inet => "0.0.0.0:0".to_string(),
                    lvs_core::service::AddrFamily::Inet6 => "[::]:0".to_string(),
                },
            };
            // printf("%-20s %-8u \n", vname, num_laddrs): note the space before the newline.
            out.push_str(&format!("{name:<20} {:<8} \n", lips.len()));
            for lip in lips {
                let used = conns
                    .iter()
                    .filter(|c| {
                        c.local.is_some_and(|l| l.ip() == *lip)
                            && match key {
                                ServiceKey::Addr { proto, addr, port } => {
                                    c.proto == Some(*proto)
                                        && c.virt.ip() == *addr
                                        && (*port == 0 || c.virt.port() == *port)
                                }
                                ServiceKey::Fwmark { .. } => true,
                            }
                    })
                    .count();
                out.push_str(&format!(
                    "{:<20} {:<8} {:<20} {:<10} {:<10}\n",
                    "",
                    "",
                    lip.to_string(),
                    0,
                    used
                ));
            }
        }
        out
    }
}

/// Serves `plane` on a control socket at `path` (mode 0600), one request at a time.
pub fn serve(plane: Arc<Mutex<ControlPlane>>, path: &Path) -> io::Result<ControlServer> {
    ControlServer::start(path, move |req| lock(&plane).handle(&req))
}

/// The control socket path a client uses: `--socket`, else `$LVS_SOCKET`, else
/// [`crate::config::DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("LVS_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SOCKET))
}

/// True when `args` is a restore command (`-R`, `--restore`): only then is stdin read.
pub fn is_restore(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some("--restore") => true,
        Some(a) => a.starts_with('-') && !a.starts_with("--") && a[1..].starts_with('R'),
        None => false,
    }
}

/// The client: sends `args` to the daemon at `socket` (with stdin for `-R`), writes its
/// answer to `out` and `err` and returns the exit code. `program` names the command in
/// `-h` (answered locally, as is `-v`). An unreachable daemon is ipvsadm's "Can't initialize
/// ipvs" failure, exit 2.
pub fn run_client(
    program: &str,
    socket: &Path,
    args: Vec<String>,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u32 {
    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            let _ = out.write_all(usage_text(program).as_bytes());
            return 0;
        }
        Some("-v" | "--version") => {
            let _ = out.write_all(version_text().as_bytes());
            return 0;
        }
        _ => {}
    }
    let mut input = String::new();
    if is_restore(&args)
        && let Err(e) = stdin.read_to_string(&mut input)
    {
        let _ = writeln!(err, "cannot read the rules from standard input: {e}");
        return EXIT_USAGE;
    }
    match control::call(socket, &Request { args, stdin: input }) {
        Ok(resp) => {
            let _ = out.write_all(resp.stdout.as_bytes());
            let _ = out.flush();
            let _ = err.write_all(resp.stderr.as_bytes());
            resp.code
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "Can't initialize ipvs: {e}\nAre you sure that lvs is running?"
            );
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn restore_detection() {
        assert!(is_restore(&s(&["-R"])));
        assert!(is_restore(&s(&["--restore"])));
        assert!(!is_restore(&s(&["-L", "-n"])));
        assert!(!is_restore(&s(&["--rate"])));
        assert!(!is_restore(&[]));
    }

    #[test]
    fn laddr_grammar() {
        let k = ServiceKey::Addr {
            proto: lvs_core::Protocol::Tcp,
            addr: [10, 0, 0, 1].into(),
            port: 80,
        };
        let lip: IpAddr = [192, 168, 100, 1].into();
        assert_eq!(
            parse_laddr(&s(&[
                "-P",
                "-t",
                "10.0.0.1:80",
                "-z",
                "192.168.100.1",
                "-F",
                "eth1"
            ])),
            Some(Ok(LaddrCommand::Add(k, lip)))
        );
        assert_eq!(
            parse_laddr(&s(&[
                "--del-laddr",
                "--tcp-service=10.0.0.1:80",
                "--laddr=192.168.100.1"
            ])),
            Some(Ok(LaddrCommand::Del(k, lip)))
        );
        assert_eq!(parse_laddr(&s(&["-G"])), Some(Ok(LaddrCommand::Get(None))));
        assert_eq!(parse_laddr(&s(&["-L"])), None);
        let e = parse_laddr(&s(&["-P", "-t", "10.0.0.1:80"]))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e.0,
            "You need to supply the 'local-address' option for the 'add-laddr' command"
        );
        let e = parse_laddr(&s(&["-P", "-t", "10.0.0.1:80", "-z", "nope"]))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.0, "illegal local address");
    }
}
