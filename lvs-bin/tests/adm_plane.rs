//! The control plane in-process: ipvsadm command sequences through `ControlPlane::handle`, the
//! listings compared with the text ipvsadm 1.31 prints (its printf formats written out by
//! hand), its error wording, stdout/stderr split and exit codes, restore all-or-nothing,
//! `-Z`, `--set`, `--rate` after the 2 s tick, `-L -c` over a real connection table, and
//! DPVS's local-address commands.

use lvs_core::stats::StatsWriter;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lvs_bin::adm::{ControlPlane, version_text};
use lvs_bin::control::{Request, Response};
use lvs_core::conn::{ConnKeyIn, ConnTable, Direction, NewConn, TcpFlags};
use lvs_core::{ForwardMethod, Protocol, ServiceKey, ServiceTable, Time};

struct Fixture {
    plane: ControlPlane,
    services: Arc<ServiceTable>,
    conns: Arc<ConnTable>,
    clock: Arc<AtomicU64>,
}

impl Fixture {
    fn new() -> Fixture {
        let services = Arc::new(ServiceTable::new());
        let conns = Arc::new(ConnTable::with_capacity(1024));
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let c = clock.clone();
        let plane = ControlPlane::new(services.clone(), conns.clone(), move || {
            Time::from_millis(c.load(Ordering::Relaxed))
        });
        Fixture {
            plane,
            services,
            conns,
            clock,
        }
    }

    fn now(&self) -> Time {
        Time::from_millis(self.clock.load(Ordering::Relaxed))
    }

    fn advance_ms(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::Relaxed);
    }

    fn run_with(&mut self, line: &str, stdin: &str) -> Response {
        self.plane.handle(&Request {
            args: line.split_whitespace().map(String::from).collect(),
            stdin: stdin.to_string(),
        })
    }

    fn run(&mut self, line: &str) -> Response {
        self.run_with(line, "")
    }

    /// Runs a command that must succeed silently on stderr; returns its stdout.
    fn ok(&mut self, line: &str) -> String {
        let r = self.run(line);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "`{line}` failed");
        r.stdout
    }

    /// Runs a command that must fail; returns (code, stderr) and checks stdout is empty.
    fn err(&mut self, line: &str) -> (u32, String) {
        let r = self.run(line);
        assert_ne!(r.code, 0, "`{line}` should fail");
        assert_eq!(r.stdout, "", "errors go to stderr only");
        (r.code, r.stderr)
    }
}

const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// Four services, four schedulers, persistence with a mask, scheduler flags, every forwarding
/// method; added in an order that differs from ipvsadm's sorted order.
fn configure(f: &mut Fixture) {
    for line in [
        "-A -u 10.0.0.2:53 -s sh -b sh-port",
        "-A -t 10.0.0.1:80 -s rr",
        "-A -t 10.0.0.1:443 -s wlc -p 600 -M 255.255.255.0",
        "-A -f 7 -s mh -b mh-fallback,mh-port",
        "-a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m",
        "-a -t 10.0.0.1:80 -r 192.168.1.11:8080 -m -w 2",
        // DR cannot map ports: ipvsadm forces the service port.
        "-a -t 10.0.0.1:80 -r 192.168.1.12:9999 -g -w 0",
        "-a -t 10.0.0.1:443 -r 192.168.1.10 -i -w 5",
        "-a -u 10.0.0.2:53 -r 192.168.2.1:53 -m -x 100 -y 10",
        "-a -f 7 -r 192.168.3.1",
        "-e -t 10.0.0.1:80 -r 192.168.1.11:8080 -m -w 7",
        "-d -t 10.0.0.1:80 -r 192.168.1.12",
    ] {
        f.ok(line);
    }
}

const LISTING: &str = "TCP  10.0.0.1:80 rr
  -> 192.168.1.10:8080            Masq    1      0          0         
  -> 192.168.1.11:8080            Masq    7      0          0         
TCP  10.0.0.1:443 wlc persistent 600 mask 255.255.255.0
  -> 192.168.1.10:443             Tunnel  5      0          0         
UDP  10.0.0.2:53 sh (sh-port)
  -> 192.168.2.1:53               Masq    1      0          0         
FWM  7 mh (mh-fallback,mh-port)
  -> 192.168.3.1:0                Route   1      0          0         \n";

const SAVE: &str = "-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m -w 1
-a -t 10.0.0.1:80 -r 192.168.1.11:8080 -m -w 7
-A -t 10.0.0.1:443 -s wlc -p 600 -M 255.255.255.0
-a -t 10.0.0.1:443 -r 192.168.1.10:443 -i -w 5 --tun-type ipip
-A -u 10.0.0.2:53 -s sh -b sh-port
-a -u 10.0.0.2:53 -r 192.168.2.1:53 -m -w 1
-A -f 7 -s mh -b mh-fallback,mh-port
-a -f 7 -r 192.168.3.1:0 -g -w 1\n";

#[test]
fn command_sequence_lists_and_saves_like_ipvsadm() {
    let mut f = Fixture::new();
    configure(&mut f);
    assert_eq!(f.ok("-L -n"), format!("{HEADER}{LISTING}"));
    // `ipvsadm` alone, -l, and grouped -Ln list the same table.
    assert_eq!(f.ok(""), format!("{HEADER}{LISTING}"));
    assert_eq!(f.ok("-Ln"), format!("{HEADER}{LISTING}"));
    assert_eq!(f.ok("-l"), format!("{HEADER}{LISTING}"));
    assert_eq!(f.ok("-S -n"), SAVE);
    assert_eq!(f.ok("-S"), SAVE);
    // --nosort: kernel order; -a inserts at the head, so 192.168.1.11 comes first.
    let nosort = f.ok("-L -n --nosort");
    let lines: Vec<&str> = nosort.lines().skip(3).collect();
    assert_eq!(lines[0], "UDP  10.0.0.2:53 sh (sh-port)");
    assert_eq!(lines[2], "TCP  10.0.0.1:80 rr");
    assert!(lines[3].starts_with("  -> 192.168.1.11:8080 "), "{nosort}");
    assert!(lines[4].starts_with("  -> 192.168.1.10:8080 "), "{nosort}");
    // The published snapshot is what the packet path sees.
    let set = f.services.load();
    let web = set.lookup(Protocol::Tcp, [10, 0, 0, 1].into(), 80).unwrap();
    assert_eq!(web.dests.len(), 2);
    assert_eq!(web.dest([192, 168, 1, 11].into(), 8080).unwrap().config.weight, 7);
    assert_eq!(f.plane.rules().services.len(), 4);
}

#[test]
fn one_service_thresholds_and_persistent_conn_views() {
    let mut f = Fixture::new();
    configure(&mut f);
    // list_service: title, no version header.
    assert_eq!(
        f.ok("-L -n -t 10.0.0.1:443"),
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:443 wlc persistent 600 mask 255.255.255.0
  -> 192.168.1.10:443             Tunnel  5      0          0         \n"
    );
    assert_eq!(
        f.ok("-L -n --thresholds -u 10.0.0.2:53"),
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port
UDP  10.0.0.2:53 sh (sh-port)
  -> 192.168.2.1:53               100        10         0          0         \n"
    );
    assert_eq!(
        f.ok("-L -n --persistent-conn -f 7"),
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port
FWM  7 mh (mh-fallback,mh-port)
  -> 192.168.3.1:0                1         0           0          0         \n"
    );
}

#[test]
fn errors_have_ipvsadm_wording_and_exit_codes() {
    let mut f = Fixture::new();
    configure(&mut f);
    let cases: &[(&str, u32, &str)] = &[
        // The kernel's answers: libipvs returns -1, main returns it: 255.
        ("-a -t 10.0.0.9:80 -r 192.168.1.10", 255, "Service not defined\n"),
        (
            "-a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m",
            255,
            "Destination already exists\n",
        ),
        ("-A -t 10.0.0.1:80 -s wrr", 255, "Service already exists\n"),
        ("-D -t 10.0.0.9:80", 255, "No such service\n"),
        ("-E -t 10.0.0.9:80 -s rr", 255, "No such service\n"),
        ("-Z -t 10.0.0.9:80", 255, "No such service\n"),
        (
            "-e -t 10.0.0.1:80 -r 192.168.1.99:8080 -m",
            255,
            "No such destination\n",
        ),
        (
            "-d -t 10.0.0.1:80 -r 192.168.1.99:8080",
            255,
            "No such destination\n",
        ),
        (
            "-a -t 10.0.0.1:80 -r 192.168.1.20:80 -m -x 10 -y 20",
            255,
            "Numerical result out of range\n",
        ),
        (
            "-A -t 10.0.0.5:80 -s bogus",
            255,
            "Scheduler or persistence engine not found\n",
        ),
        // popt's errors and tryhelp_exit(-1): 255.
        ("-K", 255, "-K: unknown option\n"),
        ("-A --frobnicate", 255, "--frobnicate: unknown option\n"),
        (
            "-n -L",
            255,
            "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n",
        ),
        // ipvsadm's own fail(2, ...).
        (
            "-A -t 10.0.0.5",
            2,
            "Zero port specified for non-persistent service\n",
        ),
        (
            "-A -t 10.0.0.5:80 -r 1.2.3.4",
            2,
            "Illegal 'real-server' option with the 'add-service' command\n",
        ),
        (
            "-a -t 10.0.0.1:80",
            2,
            "You need to supply the 'real-server' option for the 'add-server' command\n",
        ),
        (
            "-a -t 10.0.0.1:80 -r 1.2.3.4 -w 70000",
            2,
            "illegal weight specified\n",
        ),
        ("-L -c --stats", 2, "options conflicts in the list command\n"),
        ("--set 1 2", 2, "--set option requires 3 timeout values\n"),
        // list_service: exit(1).
        ("-L -n -t 10.0.0.9:80", 1, "No such service\n"),
    ];
    for &(line, code, msg) in cases {
        assert_eq!(f.err(line), (code, msg.to_string()), "`{line}`");
    }
    // Nothing of that changed the rules.
    assert_eq!(f.ok("-S -n"), SAVE);
}

#[test]
fn restore_is_all_or_nothing_and_names_the_line() {
    let mut f = Fixture::new();
    configure(&mut f);
    let bad = "# a comment\n-A -t 10.1.0.1:80 -s rr\n\n-a -t 10.1.0.1:80 -r 192.168.5.1:80 -m\n-a -t 10.9.9.9:80 -r 192.168.5.2:80 -m\n";
    let r = f.run_with("-R", bad);
    assert_eq!(r.code, 255);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.starts_with("Service not defined\n"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("line 5: -a -t 10.9.9.9:80 -r 192.168.5.2:80 -m"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing applied"), "{}", r.stderr);
    assert_eq!(
        f.ok("-S -n"),
        SAVE,
        "earlier rules stay, nothing of the file applied"
    );
    assert!(
        f.services
            .load()
            .lookup(Protocol::Tcp, [10, 1, 0, 1].into(), 80)
            .is_none()
    );

    // A line ipvsadm itself refuses: exit 2, still nothing applied.
    let r = f.run_with(
        "--restore",
        "-A -t 10.1.0.1:80 -s rr\n-a -t 10.1.0.1:80 -r not-an-address -m\n",
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with("illegal real server address[:port] specified\n")
            && r.stderr.contains("line 2:"),
        "{}",
        r.stderr
    );
    assert_eq!(f.ok("-S -n"), SAVE);

    // A good file (ipvsadm-save output, with and without the program name) applies whole.
    let good = "-C\n-A -t 10.1.0.1:80 -s wrr\nipvsadm -a -t 10.1.0.1:80 -r 192.168.5.1:80 -m -w 3\n";
    let r = f.run_with("-R", good);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    assert_eq!(
        f.ok("-S -n"),
        "-A -t 10.1.0.1:80 -s wrr\n-a -t 10.1.0.1:80 -r 192.168.5.1:80 -m -w 3\n"
    );
}

#[test]
fn save_restores_into_an_empty_daemon() {
    let mut f = Fixture::new();
    configure(&mut f);
    let saved = f.ok("-S -n");
    let mut g = Fixture::new();
    let r = g.run_with("-R", &saved);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(g.ok("-L -n"), format!("{HEADER}{LISTING}"));
    // load_rules is the same, for the daemon's --rules file.
    let mut h = Fixture::new();
    h.plane.load_rules(&saved).unwrap();
    assert_eq!(h.ok("-S -n"), saved);
    let e = h
        .plane
        .load_rules("-A -t 10.7.0.1:80\n-A -t 10.7.0.1:80\n")
        .unwrap_err();
    assert_eq!(e.to_string(), "line 2: Service already exists");
    assert_eq!(h.ok("-S -n"), saved);
}

fn web(f: &Fixture) -> Arc<lvs_core::VirtualService> {
    f.services
        .load()
        .lookup(Protocol::Tcp, [10, 0, 0, 1].into(), 80)
        .unwrap()
        .clone()
}

#[test]
fn stats_exact_and_zero() {
    let mut f = Fixture::new();
    configure(&mut f);
    let svc = web(&f);
    let w = lvs_core::stats::StatsWriter::new();
    for _ in 0..3 {
        svc.stats.add_conn(&w);
    }
    svc.stats.add_in(&w, 30, 4500);
    svc.stats.add_out(&StatsWriter::shared(), 20, 123_456_789);
    let d = &svc
        .dests
        .iter()
        .find(|d| d.config.port == 8080 && d.config.addr == IpAddr::from([192, 168, 1, 10]))
        .unwrap()
        .state;
    d.stats.add_conn(&StatsWriter::shared());
    d.stats.add_conn(&StatsWriter::shared());
    d.stats.add_in(&StatsWriter::shared(), 20, 3000);
    d.stats.add_out(&StatsWriter::shared(), 10, 0);
    let other = f
        .services
        .load()
        .lookup(Protocol::Udp, [10, 0, 0, 2].into(), 53)
        .unwrap()
        .clone();
    other.stats.add_conn(&StatsWriter::shared());

    let title = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n";
    let svc_line = "TCP  10.0.0.1:80                         3       30       20     4500  123456K\n";
    let dest_line = "  -> 192.168.1.10:8080                   2       20       10     3000        0\n";
    let text = f.ok("-L -n --stats -t 10.0.0.1:80");
    assert_eq!(
        text,
        format!(
            "{title}{svc_line}{dest_line}  -> 192.168.1.11:8080                   0        0        0        0        0\n"
        )
    );
    // --exact: every number in full, one column wider when it needs it.
    let exact = f.ok("-L -n --stats --exact -t 10.0.0.1:80");
    assert!(
        exact.contains("TCP  10.0.0.1:80                         3       30       20     4500 123456789\n"),
        "{exact}"
    );

    // -Z of one service zeroes it and its destinations only.
    f.ok("-Z -t 10.0.0.1:80");
    let text = f.ok("-L -n --stats");
    assert!(
        text.contains("TCP  10.0.0.1:80                         0        0        0        0        0\n"),
        "{text}"
    );
    assert!(
        text.contains("UDP  10.0.0.2:53                         1        0        0        0        0\n"),
        "{text}"
    );
    assert_eq!(d.stats.snapshot().conns, 0);
    // -Z alone zeroes everything.
    f.ok("-Z");
    assert_eq!(other.stats.snapshot().conns, 0);
}

#[test]
fn rates_come_from_the_two_second_tick() {
    let mut f = Fixture::new();
    configure(&mut f);
    let svc = web(&f);
    let d = svc
        .dests
        .iter()
        .find(|d| d.config.addr == IpAddr::from([192, 168, 1, 10]))
        .unwrap()
        .state
        .clone();
    f.plane.tick(f.now());
    for _ in 0..400 {
        svc.stats.add_conn(&StatsWriter::shared());
        d.stats.add_conn(&StatsWriter::shared());
    }
    svc.stats.add_in(&StatsWriter::shared(), 4000, 400_000);
    d.stats.add_in(&StatsWriter::shared(), 4000, 400_000);
    f.advance_ms(2000);
    // Before the tick the estimate is still zero.
    assert!(
        f.ok("-L -n --rate")
            .contains("TCP  10.0.0.1:80                         0        0")
    );
    f.plane.tick_now();
    // One EWMA step (weight 1/4) after 2 s at 200 conn/s, 2000 pkt/s, 200000 B/s.
    let title = "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n";
    assert_eq!(
        f.ok("-L -n --rate -t 10.0.0.1:80"),
        format!(
            "{title}TCP  10.0.0.1:80                        50      500        0    50000        0
  -> 192.168.1.10:8080                  50      500        0    50000        0
  -> 192.168.1.11:8080                   0        0        0        0        0\n"
        )
    );
}

#[test]
fn set_timeouts_and_timeout_listing() {
    let mut f = Fixture::new();
    assert_eq!(f.ok("-L --timeout"), "Timeout (tcp tcpfin udp): 900 120 300\n");
    assert_eq!(f.ok("--set 100 0 30"), "");
    assert_eq!(f.ok("-L --timeout"), "Timeout (tcp tcpfin udp): 100 120 30\n");
    assert_eq!(f.conns.timeouts().get(), (100, 120, 30));
    assert_eq!(
        f.err("--set 100 x 30"),
        (2, "invalid timeout value `x' specified\n".to_string())
    );
    assert_eq!(f.ok("-L --daemon"), "");
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn connection_listing_reads_the_conn_table() {
    let mut f = Fixture::new();
    configure(&mut f);
    let svc = web(&f);
    let state = |a: [u8; 4]| {
        svc.dests
            .iter()
            .find(|d| d.config.addr == IpAddr::from(a))
            .unwrap()
            .state
            .clone()
    };
    let (d10, d11) = (state([192, 168, 1, 10]), state([192, 168, 1, 11]));
    let t0 = f.now();
    let c1 = f
        .conns
        .insert(
            NewConn::new(
                ConnKeyIn::new(Protocol::Tcp, sa("10.200.0.1:40000"), sa("10.0.0.1:80")),
                ForwardMethod::Masq,
                sa("192.168.1.10:8080"),
                &d10,
            ),
            t0,
        )
        .unwrap();
    f.conns.on_packet(&c1, Direction::Input, TcpFlags::SYN, t0);
    let c2 = f
        .conns
        .insert(
            NewConn::new(
                ConnKeyIn::new(Protocol::Tcp, sa("10.200.0.2:40001"), sa("10.0.0.1:80")),
                ForwardMethod::Masq,
                sa("192.168.1.11:8080"),
                &d11,
            ),
            t0,
        )
        .unwrap();
    f.conns.on_packet(&c2, Direction::Input, TcpFlags::SYN, t0);
    f.conns
        .on_packet(&c2, Direction::Output, TcpFlags::SYN | TcpFlags::ACK, t0);
    f.conns.on_packet(&c2, Direction::Input, TcpFlags::ACK, t0);
    f.advance_ms(1000);

    let text = f.ok("-L -n -c");
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "IPVS connection entries");
    assert_eq!(
        lines[1],
        "pro expire state       source             virtual            destination"
    );
    let mut rows = lines.split_off(2);
    rows.sort();
    assert_eq!(
        rows,
        [
            "TCP 00:59  SYN_RECV    10.200.0.1:40000   10.0.0.1:80        192.168.1.10:8080",
            "TCP 14:59  ESTABLISHED 10.200.0.2:40001   10.0.0.1:80        192.168.1.11:8080",
        ]
    );
    assert!(f.ok("-L -n -c --persistent-conn").starts_with(
        "IPVS connection entries\npro expire state       source             virtual            destination        pe name          pe_data\n"
    ));
    // The service listing counts them: SYN_RECV is inactive, ESTABLISHED active.
    let one = f.ok("-L -n -t 10.0.0.1:80");
    assert!(
        one.ends_with(
            "  -> 192.168.1.10:8080            Masq    1      0          1         
  -> 192.168.1.11:8080            Masq    7      1          0         \n"
        ),
        "{one}"
    );
}

#[test]
fn local_addresses_add_list_delete() {
    let mut f = Fixture::new();
    configure(&mut f);
    let seen: Arc<Mutex<Vec<Vec<IpAddr>>>> = Arc::default();
    let s = seen.clone();
    f.plane
        .on_local_addresses_changed(move |all| s.lock().unwrap().push(all.to_vec()));
    f.ok("-P -t 10.0.0.1:80 -z 192.168.100.1");
    f.ok("--add-laddr -t 10.0.0.1:80 --laddr 192.168.100.2 -F eth1");
    f.ok("-P -t 10.0.0.1:443 -z 192.168.100.1");
    assert_eq!(
        f.err("-P -t 10.0.0.1:80 -z 192.168.100.1"),
        (255, "Local address already exists\n".to_string())
    );
    assert_eq!(
        f.err("-P -t 10.0.0.9:80 -z 192.168.100.1"),
        (255, "Service not defined\n".to_string())
    );
    assert_eq!(
        f.err("-P -t 10.0.0.1:80 -z bogus"),
        (2, "illegal local address\n".to_string())
    );
    assert_eq!(f.err("-G -t 10.0.0.9:80"), (1, "No such service\n".to_string()));

    // A FULLNAT connection through the first LIP shows in its CONNS column.
    let svc = web(&f);
    let d = svc.dests[0].state.clone();
    let mut nc = NewConn::new(
        ConnKeyIn::new(Protocol::Tcp, sa("10.200.0.9:40000"), sa("10.0.0.1:80")),
        ForwardMethod::FullNat,
        sa("192.168.1.10:8080"),
        &d,
    );
    nc.local = Some(sa("192.168.100.1:5000"));
    f.conns.insert(nc, f.now()).unwrap();

    let title = "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS     \n";
    let web_part = "10.0.0.1:80          2        
                              192.168.100.1        0          1         
                              192.168.100.2        0          0         \n";
    assert_eq!(f.ok("-G -t 10.0.0.1:80"), format!("{title}{web_part}"));
    // All services, in configuration order, the title once.
    assert_eq!(
        f.ok("-G"),
        format!(
            "{title}10.0.0.2:53          0        \n{web_part}10.0.0.1:443         1        
                              192.168.100.1        0          0         
0.0.0.0:0            0        \n"
        )
    );
    let key80 = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: [10, 0, 0, 1].into(),
        port: 80,
    };
    let lip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        f.plane.local_addresses_of(&key80),
        [lip("192.168.100.1"), lip("192.168.100.2")]
    );
    f.ok("-Q -t 10.0.0.1:80 -z 192.168.100.2");
    assert_eq!(
        f.err("-Q -t 10.0.0.1:80 -z 192.168.100.2"),
        (255, "No such local address\n".to_string())
    );
    // Deleting a service drops its LIPs; the pool the daemon builds follows.
    f.ok("-D -t 10.0.0.1:443");
    assert_eq!(f.plane.local_addresses(), [lip("192.168.100.1")]);
    assert!(f.plane.lip_pool(1024, 65535).contains(lip("192.168.100.1")));
    f.ok("-C");
    assert!(f.plane.local_addresses().is_empty());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.first().unwrap(), &[lip("192.168.100.1")]);
    assert!(seen.last().unwrap().is_empty());
    assert_eq!(seen.len(), 6, "three adds, one delete, -D, -C: {seen:?}");
}

#[test]
fn help_and_version() {
    let mut f = Fixture::new();
    let v = f.ok("-v");
    assert_eq!(v, version_text());
    assert!(
        v.starts_with("ipvsadm v1.31 2019/12/24 (compiled with lvs "),
        "{v}"
    );
    assert!(v.ends_with(" and IPVS v1.2.1)\n"), "{v}");
    assert_eq!(f.ok("--version"), v);
    let h = f.ok("-h");
    assert!(
        h.starts_with(&format!("{v}Usage:\n  ipvsadm -A|E virtual-service")),
        "{h}"
    );
    for opt in [
        "--add-service",
        "--restore",
        "--set tcp tcpfin udp",
        "--add-laddr",
        "--rate",
        "--exact",
    ] {
        assert!(h.contains(opt), "help lacks {opt}");
    }
    assert_eq!(f.ok("--help"), h);
}

#[test]
fn table_size_and_existing_snapshot() {
    // A control plane created over an already published table starts from its rules.
    let mut f = Fixture::new();
    configure(&mut f);
    let mut g =
        ControlPlane::new(f.services.clone(), f.conns.clone(), || Time::ZERO).with_table_size(1 << 20);
    let r = g.handle(&Request {
        args: vec!["-L".into(), "-n".into()],
        stdin: String::new(),
    });
    assert_eq!(
        r.stdout,
        format!("{}{LISTING}", HEADER.replace("size=4096", "size=1048576"))
    );
}

#[test]
fn ipv6_services_and_local_addresses() {
    let mut f = Fixture::new();
    f.ok("-A -t [2001:db8::1]:80 -s rr");
    f.ok("-A -t 10.0.0.1:80 -s rr");
    f.ok("-a -t [2001:db8::1]:80 -r [2001:db8::10]:8080 -m");
    // IPv4 services sort first (AF_INET 2 < AF_INET6 10); --sort is a no-op.
    let expected = format!(
        "{HEADER}TCP  10.0.0.1:80 rr
TCP  [2001:db8::1]:80 rr
  -> [2001:db8::10]:8080          Masq    1      0          0         
"
    );
    assert_eq!(f.ok("-L -n"), expected);
    assert_eq!(f.ok("-L -n --sort"), expected);
    assert_eq!(
        f.ok("-S -n"),
        "-A -t 10.0.0.1:80 -s rr\n-A -t [2001:db8::1]:80 -s rr\n-a -t [2001:db8::1]:80 -r [2001:db8::10]:8080 -m -w 1\n"
    );
    f.ok("-P -t [2001:db8::1]:80 -z 2001:db8:ffff::1");
    assert_eq!(
        f.ok("-G -t [2001:db8::1]:80"),
        "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS     
[2001:db8::1]:80     1        
                              2001:db8:ffff::1     0          0         
"
    );
}
