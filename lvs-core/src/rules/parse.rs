//! ipvsadm's command-line grammar: argv (as a shell splits it) in, one [`Command`] out.
//!
//! Mirrors ipvsadm 1.31's `parse_options`/`process_options`: popt-style short and long options
//! (grouped short flags such as `-Ln`, attached arguments such as `-w3` or `--weight=3`, `-p`
//! with an optional timeout), the command/option legality table (`commands_v_options`), the
//! same defaults (wlc, weight 1, direct routing, persistence 300 s) and the same error texts.
//! Addresses and ports are numeric only: lvs-core does no name resolution.

use std::net::{IpAddr, Ipv4Addr};

use crate::dest::{DestConfig, ForwardMethod};
use crate::sched::SchedulerKind;
use crate::service::{
    AddrFamily, DEFAULT_PERSISTENCE_TIMEOUT, PersistNetmask, Persistence, Protocol, SchedFlags,
    ServiceConfig, ServiceKey,
};

/// ipvsadm's `MAX_TIMEOUT`: 31 days, the largest `-p` and `--set` value.
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// A command-line error, worded as ipvsadm words it (its `fail()` messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Connection timeouts for `--set tcp tcpfin udp`, in seconds; 0 leaves a value unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after the client's FIN.
    pub tcp_fin: u32,
    /// UDP flows.
    pub udp: u32,
}

/// Options of `-L`/`-l` (and the format flags `-S` shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListOptions {
    /// `-n`: numeric addresses and ports (lvs always prints numerically).
    pub numeric: bool,
    /// `-c`: list connections instead of services.
    pub connection: bool,
    /// `--timeout`: show the timeouts.
    pub timeout: bool,
    /// `--daemon`: show the sync daemon state.
    pub daemon: bool,
    /// `--stats`: packet/byte counters.
    pub stats: bool,
    /// `--rate`: rate estimates.
    pub rate: bool,
    /// `--thresholds`: upper/lower thresholds.
    pub thresholds: bool,
    /// `--persistent-conn`: persistence template counts.
    pub persistent_conn: bool,
    /// `--nosort`: keep kernel order instead of sorting.
    pub nosort: bool,
    /// `--exact` (`-X`): never abbreviate numbers with K/M/G/T.
    pub exact: bool,
    /// Only this service (`-L -t VIP:port`).
    pub service: Option<ServiceKey>,
}

/// One parsed ipvsadm command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A`: add a virtual service (its `dests` are empty).
    AddService(ServiceConfig),
    /// `-E`: replace a service's settings, keeping its destinations.
    EditService(ServiceConfig),
    /// `-D`: delete a virtual service.
    DeleteService(ServiceKey),
    /// `-C`: clear the whole table.
    Clear,
    /// `-a`: add a destination to a service.
    AddDest {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: DestConfig,
    },
    /// `-e`: edit a destination of a service.
    EditDest {
        /// The service.
        service: ServiceKey,
        /// The destination's new settings (addr and port select it).
        dest: DestConfig,
    },
    /// `-d`: delete a destination of a service.
    DeleteDest {
        /// The service.
        service: ServiceKey,
        /// Real server address.
        addr: IpAddr,
        /// Real server port.
        port: u16,
    },
    /// `-L`/`-l`: list.
    List(ListOptions),
    /// `-S`: save rules (`numeric` is `-n`).
    Save {
        /// `-n` was given.
        numeric: bool,
    },
    /// `-R`: restore rules from standard input.
    Restore,
    /// `-Z`: zero counters of one service or of all.
    Zero(Option<ServiceKey>),
    /// `--set tcp tcpfin udp`.
    SetTimeouts(Timeouts),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// ipvsadm's `cmdnames`.
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Row of ipvsadm 1.31's `commands_v_options` table, restricted to the options lvs knows
    /// (columns in [`OPT_NAMES`] order): '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional.
    fn legality(self) -> &'static [u8; N_OPT] {
        //                    -n -c svc -s -p -M -r fwd -w -x -y tot dmn -st -rt thr -pc srt -ex ops -b  tun
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxx  x",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxx11      xxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxx ",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxx",
        }
    }
}

const N_OPT: usize = 22;

/// ipvsadm's `optnames` for the options lvs knows, in table-column order.
const OPT_NAMES: [&str; N_OPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "exact",
    "ops",
    "sched-flags",
    "tun-type",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Opt {
    Numeric = 0,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Exact,
    Ops,
    SchedFlags,
    TunType,
}

/// What an option does once recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Command(Cmd),
    /// Takes an argument.
    Arg(ArgOpt),
    /// `-p`: optional argument.
    Persistent,
    /// A flag.
    Flag(FlagOpt),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgOpt {
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Netmask,
    Server,
    Weight,
    UThreshold,
    LThreshold,
    SchedFlags,
    TunType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagOpt {
    Masq,
    Ipip,
    Gatewaying,
    FullNat,
    Numeric,
    Connection,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
}

fn short_tag(c: char) -> Option<Tag> {
    Some(match c {
        'A' => Tag::Command(Cmd::Add),
        'E' => Tag::Command(Cmd::Edit),
        'D' => Tag::Command(Cmd::Del),
        'C' => Tag::Command(Cmd::Flush),
        'L' | 'l' => Tag::Command(Cmd::List),
        'Z' => Tag::Command(Cmd::Zero),
        'a' => Tag::Command(Cmd::AddDest),
        'e' => Tag::Command(Cmd::EditDest),
        'd' => Tag::Command(Cmd::DelDest),
        'R' => Tag::Command(Cmd::Restore),
        'S' => Tag::Command(Cmd::Save),
        't' => Tag::Arg(ArgOpt::Tcp),
        'u' => Tag::Arg(ArgOpt::Udp),
        'f' => Tag::Arg(ArgOpt::Fwmark),
        's' => Tag::Arg(ArgOpt::Scheduler),
        'p' => Tag::Persistent,
        'M' => Tag::Arg(ArgOpt::Netmask),
        'r' => Tag::Arg(ArgOpt::Server),
        'm' => Tag::Flag(FlagOpt::Masq),
        'i' => Tag::Flag(FlagOpt::Ipip),
        'g' => Tag::Flag(FlagOpt::Gatewaying),
        'w' => Tag::Arg(ArgOpt::Weight),
        'x' => Tag::Arg(ArgOpt::UThreshold),
        'y' => Tag::Arg(ArgOpt::LThreshold),
        'n' => Tag::Flag(FlagOpt::Numeric),
        'c' => Tag::Flag(FlagOpt::Connection),
        'X' => Tag::Flag(FlagOpt::Exact),
        '6' => Tag::Flag(FlagOpt::Ipv6),
        'o' => Tag::Flag(FlagOpt::Ops),
        'b' => Tag::Arg(ArgOpt::SchedFlags),
        _ => return None,
    })
}

fn long_tag(name: &str) -> Option<Tag> {
    Some(match name {
        "add-service" => Tag::Command(Cmd::Add),
        "edit-service" => Tag::Command(Cmd::Edit),
        "delete-service" => Tag::Command(Cmd::Del),
        "clear" => Tag::Command(Cmd::Flush),
        "list" => Tag::Command(Cmd::List),
        "zero" => Tag::Command(Cmd::Zero),
        "add-server" => Tag::Command(Cmd::AddDest),
        "edit-server" => Tag::Command(Cmd::EditDest),
        "delete-server" => Tag::Command(Cmd::DelDest),
        "set" => Tag::Command(Cmd::Timeout),
        "restore" => Tag::Command(Cmd::Restore),
        "save" => Tag::Command(Cmd::Save),
        "tcp-service" => Tag::Arg(ArgOpt::Tcp),
        "udp-service" => Tag::Arg(ArgOpt::Udp),
        "sctp-service" => Tag::Arg(ArgOpt::Sctp),
        "fwmark-service" => Tag::Arg(ArgOpt::Fwmark),
        "scheduler" => Tag::Arg(ArgOpt::Scheduler),
        "persistent" => Tag::Persistent,
        "netmask" => Tag::Arg(ArgOpt::Netmask),
        "real-server" => Tag::Arg(ArgOpt::Server),
        "masquerading" => Tag::Flag(FlagOpt::Masq),
        "ipip" => Tag::Flag(FlagOpt::Ipip),
        "gatewaying" => Tag::Flag(FlagOpt::Gatewaying),
        "fullnat" => Tag::Flag(FlagOpt::FullNat),
        "weight" => Tag::Arg(ArgOpt::Weight),
        "u-threshold" => Tag::Arg(ArgOpt::UThreshold),
        "l-threshold" => Tag::Arg(ArgOpt::LThreshold),
        "numeric" => Tag::Flag(FlagOpt::Numeric),
        "connection" => Tag::Flag(FlagOpt::Connection),
        "timeout" => Tag::Flag(FlagOpt::Timeout),
        "daemon" => Tag::Flag(FlagOpt::Daemon),
        "stats" => Tag::Flag(FlagOpt::Stats),
        "rate" => Tag::Flag(FlagOpt::Rate),
        "thresholds" => Tag::Flag(FlagOpt::Thresholds),
        "persistent-conn" => Tag::Flag(FlagOpt::PersistentConn),
        "nosort" => Tag::Flag(FlagOpt::NoSort),
        "sort" => Tag::Flag(FlagOpt::Sort),
        "exact" => Tag::Flag(FlagOpt::Exact),
        "ipv6" => Tag::Flag(FlagOpt::Ipv6),
        "ops" => Tag::Flag(FlagOpt::Ops),
        "sched-flags" => Tag::Arg(ArgOpt::SchedFlags),
        "tun-type" => Tag::Arg(ArgOpt::TunType),
        _ => return None,
    })
}

/// A service address as ipvsadm's `parse_service` reads it.
#[derive(Debug, Clone, Copy)]
struct AddrPort {
    addr: IpAddr,
    port: Option<u16>,
}

/// ipvsadm's `string_to_number`: a whole decimal number in `min..=max`.
fn number(s: &str, min: i64, max: i64) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    let v = if neg { -v } else { v };
    (min <= v && v <= max).then_some(v)
}

/// ipvsadm's `parse_service`: `a.b.c.d[:port]`, a bare IPv6 address, or `[v6]:port`.
/// Host and service names are not resolved.
fn parse_addr_port(buf: &str) -> Option<AddrPort> {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (host, port) = if let Some(rest) = buf.strip_prefix('[') {
        let close = rest.find(']')?;
        let after = &rest[close + 1..];
        let port = after.strip_prefix(':')?;
        (&rest[..close], Some(port))
    } else if buf.parse::<std::net::Ipv6Addr>().is_ok() {
        (buf, None)
    } else {
        match buf.rfind(':') {
            Some(i) => (&buf[..i], Some(&buf[i + 1..])),
            None => (buf, None),
        }
    };
    let addr: IpAddr = match host.parse::<std::net::Ipv6Addr>() {
        Ok(a) if buf.starts_with('[') || port.is_none() => IpAddr::V6(a),
        _ => IpAddr::V4(host.parse::<Ipv4Addr>().ok()?),
    };
    let port = match port {
        Some(p) => Some(number(p, 0, 65535)? as u16),
        None => None,
    };
    Some(AddrPort { addr, port })
}

/// Parses one ipvsadm command line given as arguments *without* the program name.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Command, ParseError> {
    let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
    Parser::default().run(&args)
}

/// Splits a restore-file line into arguments (whitespace separated, `"..."` and `'...'` quote)
/// and parses it. Returns `Ok(None)` for blank lines and `#` comments.
pub fn parse_line(line: &str) -> Result<Option<Command>, ParseError> {
    let words = split_words(line)?;
    if words.is_empty() || words[0].starts_with('#') {
        return Ok(None);
    }
    // ipvsadm-restore lines may start with the program name.
    let start = usize::from(words[0] == "ipvsadm");
    if start == words.len() {
        return Ok(None);
    }
    parse_args(&words[start..]).map(Some)
}

fn split_words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return err("unterminated quote");
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[derive(Debug, Default)]
struct Parser {
    cmd: Option<Cmd>,
    options: u32,
    key: Option<ServiceKey>,
    family: AddrFamily,
    /// The service's port (0 for fwmark services), used for `-r` without a port.
    svc_port: u16,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<PersistNetmask>,
    dest: Option<AddrPort>,
    method: Option<ForwardMethod>,
    weight: Option<u32>,
    upper: u32,
    lower: u32,
    one_packet: bool,
    sched_flags: Option<String>,
    list: ListOptions,
    positional: Vec<String>,
}

impl Parser {
    fn set_option(&mut self, opt: Opt) -> Result<(), ParseError> {
        let bit = 1u32 << (opt as usize);
        if self.options & bit != 0 {
            return err(format!(
                "multiple '{}' options specified",
                OPT_NAMES[opt as usize]
            ));
        }
        self.options |= bit;
        Ok(())
    }

    fn has(&self, opt: Opt) -> bool {
        self.options & (1u32 << (opt as usize)) != 0
    }

    fn run(mut self, args: &[&str]) -> Result<Command, ParseError> {
        let mut i = 0;
        let mut first = true;
        while i < args.len() {
            let a = args[i];
            i += 1;
            if a == "--" {
                self.positional.extend(args[i..].iter().map(|s| s.to_string()));
                break;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let Some(tag) = long_tag(name) else {
                    return err(format!("{a}: unknown option"));
                };
                let value = match tag {
                    Tag::Arg(_) => match inline {
                        Some(v) => Some(v.to_string()),
                        None if i < args.len() => {
                            i += 1;
                            Some(args[i - 1].to_string())
                        }
                        None => return err(format!("--{name}: missing argument")),
                    },
                    Tag::Persistent => match inline {
                        Some(v) => Some(v.to_string()),
                        None if i < args.len() && !args[i].starts_with('-') => {
                            i += 1;
                            Some(args[i - 1].to_string())
                        }
                        None => None,
                    },
                    _ => None,
                };
                self.handle(tag, value, first)?;
                first = false;
            } else if a.len() > 1 && a.starts_with('-') {
                let chars: Vec<char> = a[1..].chars().collect();
                let mut j = 0;
                while j < chars.len() {
                    let c = chars[j];
                    j += 1;
                    let Some(tag) = short_tag(c) else {
                        return err(format!("-{c}: unknown option"));
                    };
                    let rest: String = chars[j..].iter().collect();
                    let value = match tag {
                        Tag::Arg(_) => {
                            j = chars.len();
                            if !rest.is_empty() {
                                Some(rest)
                            } else if i < args.len() {
                                i += 1;
                                Some(args[i - 1].to_string())
                            } else {
                                return err(format!("-{c}: missing argument"));
                            }
                        }
                        Tag::Persistent => {
                            j = chars.len();
                            if !rest.is_empty() {
                                Some(rest)
                            } else if i < args.len() && !args[i].starts_with('-') {
                                i += 1;
                                Some(args[i - 1].to_string())
                            } else {
                                None
                            }
                        }
                        _ => None,
                    };
                    self.handle(tag, value, first)?;
                    first = false;
                }
            } else {
                if first {
                    return err(TRY_HELP);
                }
                self.positional.push(a.to_string());
            }
        }
        let Some(cmd) = self.cmd else {
            return err(TRY_HELP);
        };
        self.finish(cmd)
    }

    fn handle(&mut self, tag: Tag, value: Option<String>, first: bool) -> Result<(), ParseError> {
        if first {
            // popt's first option must be the command (ipvsadm's tryhelp_exit otherwise).
            return match tag {
                Tag::Command(c) => {
                    self.cmd = Some(c);
                    Ok(())
                }
                _ => err(TRY_HELP),
            };
        }
        let v = value.unwrap_or_default();
        match tag {
            Tag::Command(_) => return err("multiple commands specified"),
            Tag::Arg(ArgOpt::Tcp | ArgOpt::Udp | ArgOpt::Sctp) => {
                self.set_option(Opt::Service)?;
                let proto = match tag {
                    Tag::Arg(ArgOpt::Tcp) => Protocol::Tcp,
                    Tag::Arg(ArgOpt::Udp) => Protocol::Udp,
                    _ => Protocol::Sctp,
                };
                let Some(ap) = parse_addr_port(&v) else {
                    return err("illegal virtual server address[:port] specified");
                };
                let port = ap.port.unwrap_or(0);
                self.family = AddrFamily::of(&ap.addr);
                self.svc_port = port;
                self.key = Some(ServiceKey::Addr {
                    proto,
                    addr: ap.addr,
                    port,
                });
            }
            Tag::Arg(ArgOpt::Fwmark) => {
                self.set_option(Opt::Service)?;
                let mark = number(&v, 1, u32::MAX as i64)
                    .ok_or_else(|| ParseError(format!("invalid fwmark value `{v}' specified")))?;
                self.family = AddrFamily::Inet;
                self.svc_port = 0;
                self.key = Some(ServiceKey::Fwmark {
                    mark: mark as u32,
                    family: AddrFamily::Inet,
                });
            }
            Tag::Arg(ArgOpt::Scheduler) => {
                self.set_option(Opt::Scheduler)?;
                self.scheduler = Some(v);
            }
            Tag::Persistent => {
                self.set_option(Opt::Persistent)?;
                let t = if v.is_empty() {
                    DEFAULT_PERSISTENCE_TIMEOUT
                } else {
                    number(&v, 1, MAX_TIMEOUT as i64)
                        .ok_or_else(|| ParseError(format!("invalid timeout value `{v}' specified")))?
                        as u32
                };
                self.persistent = Some(t);
            }
            Tag::Arg(ArgOpt::Netmask) => {
                self.set_option(Opt::Netmask)?;
                if self.family != AddrFamily::Inet6 {
                    let m: Ipv4Addr = v
                        .parse()
                        .map_err(|_| ParseError("illegal virtual server persistent mask specified".into()))?;
                    self.netmask = Some(PersistNetmask::V4(m));
                } else {
                    // ipvsadm uses atoi(): leading digits count, anything else is 0.
                    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
                    let plen: u32 = digits.parse().unwrap_or(0);
                    if !(1..=128).contains(&plen) {
                        return err("illegal ipv6 netmask specified");
                    }
                    self.netmask = Some(PersistNetmask::V6(plen as u8));
                }
            }
            Tag::Arg(ArgOpt::Server) => {
                self.set_option(Opt::Server)?;
                let Some(ap) = parse_addr_port(&v) else {
                    return err("illegal real server address[:port] specified");
                };
                self.dest = Some(ap);
            }
            Tag::Flag(FlagOpt::Masq | FlagOpt::Ipip | FlagOpt::Gatewaying | FlagOpt::FullNat) => {
                self.set_option(Opt::Forward)?;
                self.method = Some(match tag {
                    Tag::Flag(FlagOpt::Masq) => ForwardMethod::Masq,
                    Tag::Flag(FlagOpt::Ipip) => ForwardMethod::Tunnel,
                    Tag::Flag(FlagOpt::FullNat) => ForwardMethod::FullNat,
                    _ => ForwardMethod::DirectRoute,
                });
            }
            Tag::Arg(ArgOpt::Weight) => {
                self.set_option(Opt::Weight)?;
                let w = number(&v, 0, 65535).ok_or_else(|| ParseError("illegal weight specified".into()))?;
                self.weight = Some(w as u32);
            }
            Tag::Arg(ArgOpt::UThreshold) => {
                self.set_option(Opt::UThreshold)?;
                self.upper = number(&v, 0, i32::MAX as i64)
                    .ok_or_else(|| ParseError("illegal u_threshold specified".into()))?
                    as u32;
            }
            Tag::Arg(ArgOpt::LThreshold) => {
                self.set_option(Opt::LThreshold)?;
                self.lower = number(&v, 0, i32::MAX as i64)
                    .ok_or_else(|| ParseError("illegal l_threshold specified".into()))?
                    as u32;
            }
            Tag::Flag(FlagOpt::Numeric) => {
                self.set_option(Opt::Numeric)?;
                self.list.numeric = true;
            }
            Tag::Flag(FlagOpt::Connection) => {
                self.set_option(Opt::Connection)?;
                self.list.connection = true;
            }
            Tag::Flag(FlagOpt::Timeout) => {
                self.set_option(Opt::Timeout)?;
                self.list.timeout = true;
            }
            Tag::Flag(FlagOpt::Daemon) => {
                self.set_option(Opt::Daemon)?;
                self.list.daemon = true;
            }
            Tag::Flag(FlagOpt::Stats) => {
                self.set_option(Opt::Stats)?;
                self.list.stats = true;
            }
            Tag::Flag(FlagOpt::Rate) => {
                self.set_option(Opt::Rate)?;
                self.list.rate = true;
            }
            Tag::Flag(FlagOpt::Thresholds) => {
                self.set_option(Opt::Thresholds)?;
                self.list.thresholds = true;
            }
            Tag::Flag(FlagOpt::PersistentConn) => {
                self.set_option(Opt::PersistentConn)?;
                self.list.persistent_conn = true;
            }
            Tag::Flag(FlagOpt::NoSort) => {
                self.set_option(Opt::NoSort)?;
                self.list.nosort = true;
            }
            Tag::Flag(FlagOpt::Sort) => {}
            Tag::Flag(FlagOpt::Exact) => {
                self.set_option(Opt::Exact)?;
                self.list.exact = true;
            }
            Tag::Flag(FlagOpt::Ipv6) => match self.key {
                Some(ServiceKey::Fwmark { mark, .. }) => {
                    self.family = AddrFamily::Inet6;
                    // ipvsadm resets the persistence mask to /128 here.
                    self.netmask = None;
                    self.key = Some(ServiceKey::Fwmark {
                        mark,
                        family: AddrFamily::Inet6,
                    });
                }
                _ => return err("-6 used before -f"),
            },
            Tag::Flag(FlagOpt::Ops) => {
                self.set_option(Opt::Ops)?;
                self.one_packet = true;
            }
            Tag::Arg(ArgOpt::SchedFlags) => {
                self.set_option(Opt::SchedFlags)?;
                self.sched_flags = Some(v);
            }
            Tag::Arg(ArgOpt::TunType) => {
                self.set_option(Opt::TunType)?;
                if v != "ipip" {
                    if v == "gue" || v == "gre" {
                        return err(format!("tunnel type `{v}' is not supported by lvs"));
                    }
                    return err("illegal tunnel type specified");
                }
            }
        }
        Ok(())
    }

    /// ipvsadm's `generic_opt_check`: walks the table row in column order.
    fn check_options(&self, cmd: Cmd) -> Result<(), ParseError> {
        let row = cmd.legality();
        let mut last: Option<usize> = None;
        for (j, &rule) in row.iter().enumerate() {
            let given = self.options & (1u32 << j) != 0;
            if !given {
                if rule == b'+' {
                    return err(format!(
                        "You need to supply the '{}' option for the '{}' command",
                        OPT_NAMES[j],
                        cmd.name()
                    ));
                }
            } else {
                if rule == b'x' {
                    return err(format!(
                        "Illegal '{}' option with the '{}' command",
                        OPT_NAMES[j],
                        cmd.name()
                    ));
                }
                if rule == b'1' {
                    match last {
                        None => last = Some(j),
                        Some(l) => {
                            return err(format!(
                                "The option '{}' conflicts with the '{}' option in the '{}' command",
                                OPT_NAMES[j],
                                OPT_NAMES[l],
                                cmd.name()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn sched_flags(&self, sched: &str) -> Result<SchedFlags, ParseError> {
        let Some(arg) = &self.sched_flags else {
            return Ok(SchedFlags::NONE);
        };
        let mut flags = SchedFlags::NONE;
        for flag in arg.split(',').filter(|f| !f.is_empty()) {
            let (bit, only) = match flag {
                "flag-1" => (SchedFlags::FLAG1, None),
                "flag-2" => (SchedFlags::FLAG2, None),
                "flag-3" => (SchedFlags::FLAG3, None),
                "sh-fallback" => (SchedFlags::FLAG1, Some("sh")),
                "sh-port" => (SchedFlags::FLAG2, Some("sh")),
                "mh-fallback" => (SchedFlags::FLAG1, Some("mh")),
                "mh-port" => (SchedFlags::FLAG2, Some("mh")),
                _ => return err(format!("invalid scheduler flag `{flag}'")),
            };
            if only.is_some_and(|s| s != sched) {
                return err(format!("incompatible scheduler flag `{flag}'"));
            }
            flags = flags | bit;
        }
        Ok(flags)
    }

    fn finish(self, cmd: Cmd) -> Result<Command, ParseError> {
        // --set takes three positional timeouts (parsed before the legality check, as popt does).
        let mut timeouts = Timeouts::default();
        let mut positional = self.positional.iter();
        if cmd == Cmd::Timeout {
            let (Some(a), Some(b), Some(c)) = (positional.next(), positional.next(), positional.next())
            else {
                return err("--set option requires 3 timeout values");
            };
            let t = |s: &String| {
                number(s, 0, MAX_TIMEOUT as i64)
                    .map(|v| v as u32)
                    .ok_or_else(|| ParseError(format!("invalid timeout value `{s}' specified")))
            };
            timeouts = Timeouts {
                tcp: t(a)?,
                tcp_fin: t(b)?,
                udp: t(c)?,
            };
        }
        if let Some(extra) = positional.next() {
            return err(format!("unexpected argument {extra}"));
        }
        let sched_name = self.scheduler.clone().unwrap_or_else(|| "wlc".to_string());
        let flags = self.sched_flags(&sched_name)?;
        self.check_options(cmd)?;

        match cmd {
            Cmd::Add | Cmd::Edit => {
                let key = self.key.expect("service is compulsory");
                let is_fwmark = matches!(key, ServiceKey::Fwmark { .. });
                if !is_fwmark && self.svc_port == 0 && self.persistent.is_none() {
                    return err("Zero port specified for non-persistent service");
                }
                if self.one_packet
                    && !matches!(
                        key,
                        ServiceKey::Fwmark { .. }
                            | ServiceKey::Addr {
                                proto: Protocol::Udp,
                                ..
                            }
                    )
                {
                    return err("One-Packet Scheduling is only for UDP virtual services");
                }
                let scheduler: SchedulerKind = sched_name
                    .parse()
                    .map_err(|_| ParseError("Scheduler or persistence engine not found".into()))?;
                let mut cfg = ServiceConfig::new(key);
                cfg.scheduler = scheduler;
                cfg.sched_flags = flags;
                cfg.one_packet = self.one_packet;
                cfg.persistence = self.persistent.map(|timeout_secs| Persistence {
                    timeout_secs,
                    netmask: self.netmask.unwrap_or(PersistNetmask::default_for(self.family)),
                });
                Ok(if cmd == Cmd::Add {
                    Command::AddService(cfg)
                } else {
                    Command::EditService(cfg)
                })
            }
            Cmd::Del => Ok(Command::DeleteService(self.key.expect("service is compulsory"))),
            Cmd::Flush => Ok(Command::Clear),
            Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
                let service = self.key.expect("service is compulsory");
                let ap = self.dest.expect("real server is compulsory");
                let is_fwmark = matches!(service, ServiceKey::Fwmark { .. });
                // -r without a port takes the service's port (0 for fwmark services).
                let mut port = ap.port.unwrap_or(self.svc_port);
                let method = self.method.unwrap_or_default();
                if cmd == Cmd::DelDest {
                    return Ok(Command::DeleteDest {
                        service,
                        addr: ap.addr,
                        port,
                    });
                }
                // DR and TUN cannot change the port: ipvsadm forces the service port.
                if !is_fwmark && matches!(method, ForwardMethod::DirectRoute | ForwardMethod::Tunnel) {
                    port = self.svc_port;
                }
                if AddrFamily::of(&ap.addr) != self.family && method != ForwardMethod::Tunnel {
                    return err("Different address family is allowed only for tunneling servers");
                }
                if self.has(Opt::TunType) && method != ForwardMethod::Tunnel {
                    return err("Tunnel options conflict with forward method");
                }
                let dest = DestConfig {
                    addr: ap.addr,
                    port,
                    weight: self.weight.unwrap_or(1),
                    method,
                    upper_threshold: self.upper,
                    lower_threshold: self.lower,
                };
                Ok(if cmd == Cmd::AddDest {
                    Command::AddDest { service, dest }
                } else {
                    Command::EditDest { service, dest }
                })
            }
            Cmd::List => {
                let o = &self.list;
                if ((o.connection || o.timeout || o.daemon) && (o.stats || o.rate || o.thresholds))
                    || ((o.timeout || o.daemon) && o.persistent_conn)
                {
                    return err("options conflicts in the list command");
                }
                let mut list = self.list;
                list.service = self.key;
                Ok(Command::List(list))
            }
            Cmd::Save => Ok(Command::Save {
                numeric: self.list.numeric,
            }),
            Cmd::Restore => Ok(Command::Restore),
            Cmd::Zero => Ok(Command::Zero(self.key)),
            Cmd::Timeout => Ok(Command::SetTimeouts(timeouts)),
        }
    }
}

/// ipvsadm's `tryhelp_exit` text (no command, or an option before the command).
pub const TRY_HELP: &str = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_port_forms() {
        let a = parse_addr_port("10.0.0.1:80").unwrap();
        assert_eq!((a.addr, a.port), (IpAddr::from([10, 0, 0, 1]), Some(80)));
        let a = parse_addr_port("10.0.0.1").unwrap();
        assert_eq!(a.port, None);
        let a = parse_addr_port("[2001:db8::1]:443").unwrap();
        assert_eq!((a.addr, a.port), ("2001:db8::1".parse().unwrap(), Some(443)));
        let a = parse_addr_port("2001:db8::1").unwrap();
        assert_eq!((a.addr, a.port), ("2001:db8::1".parse().unwrap(), None));
        // ipvsadm: a bracketed address needs ":port"; all digits is not an address.
        assert!(parse_addr_port("[2001:db8::1]").is_none());
        assert!(parse_addr_port("8080").is_none());
        assert!(parse_addr_port("10.0.0.1:65536").is_none());
    }
}
