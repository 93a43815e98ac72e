//! End to end: FULLNAT carries the client's address to the real server in a TOA option, and
//! lvs's counters add up to what the real servers themselves saw.

mod e2e_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};
use std::time::{Duration, Instant};

fn two_servers(method: LabMethod, vport: u16, rport: u16, proto: &str) -> String {
    let f = flag(method);
    let rp = if matches!(method, LabMethod::DirectRoute | LabMethod::Tunnel) {
        String::new()
    } else {
        format!(":{rport}")
    };
    format!(
        "-A {proto} {vip}:{vport} -s rr\n-a {proto} {vip}:{vport} -r {rs1}{rp} {f}\n\
         -a {proto} {vip}:{vport} -r {rs2}{rp} {f}\n",
        vip = lab::VIP,
        rs1 = lab::rs_ip(0),
        rs2 = lab::rs_ip(1),
    )
}

/// FULLNAT: the server's peer is LIP:lport, and the TOA option on the segments says the
/// client's address and the exact source port curl used.
fn toa_round(backend: &str) {
    if !require_root() {
        return;
    }
    let opts = Opts {
        toa: true,
        ..Opts::default()
    };
    let rules = two_servers(LabMethod::FullNat, 80, 8080, "-t");
    let mut e = E2e::start_with(LabMethod::FullNat, 2, backend, &rules, &[], &opts);
    e.until_ok(|e| e.http(80));
    for (i, lport) in [41001u16, 41002, 41003].into_iter().enumerate() {
        let a = e.http_from(80, lport).expect("http");
        assert_eq!(seen_client(&a), lab::LIP.to_string(), "peer is the LIP: {a:?}");
        let toa = a
            .split_whitespace()
            .find_map(|t| t.strip_prefix("toa="))
            .unwrap_or_else(|| panic!("connection {i}: no TOA seen by the server: {a:?}"));
        assert_eq!(
            toa,
            format!("{}:{lport}", lab::CLIENT_IP),
            "connection {i}: {a:?}"
        );
    }
    e.stop();
}

#[test]
fn toa_fullnat_afxdp() {
    toa_round("afxdp");
}

#[test]
fn toa_fullnat_afpacket() {
    toa_round("afpacket");
}

/// With `toa = false` no option is added.
#[test]
fn toa_off_fullnat_afxdp() {
    if !require_root() {
        return;
    }
    let opts = Opts {
        toa: true,
        toml: Some("toa = false\n".into()),
        ..Opts::default()
    };
    let rules = two_servers(LabMethod::FullNat, 80, 8080, "-t");
    let mut e = E2e::start_with(LabMethod::FullNat, 2, "afxdp", &rules, &[], &opts);
    let a = e.until_ok(|e| e.http(80));
    assert_eq!(seen_client(&a), lab::LIP.to_string());
    assert!(!a.contains("toa="), "no TOA with toa = false: {a:?}");
    e.stop();
}

/// TCP segments the namespace `ns` received and sent (`/proc/net/snmp` Tcp InSegs, and
/// OutSegs + RetransSegs: Linux leaves retransmitted segments out of OutSegs, while the
/// director sees and counts every copy).
fn tcp_segs(e: &E2e, ns: &str) -> (u64, u64) {
    let o = e.lab.exec(ns, &["cat", "/proc/net/snmp"]).expect("snmp");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let field = |k: &str| -> u64 {
        let i = names.split_whitespace().position(|n| n == k).unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    (field("InSegs"), field("OutSegs") + field("RetransSegs"))
}

/// The stats line of real server `i` (0-based) in service `s`.
fn dest(s: &StatService, i: usize) -> &StatLine {
    let prefix = format!("{}:", lab::rs_ip(i));
    s.dests
        .iter()
        .find(|d| d.name.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in {s:?}"))
}

/// Sends `n` datagrams from one client socket to VIP:port and reads the answers; returns how
/// many answers came back.
fn udp_burst(e: &E2e, port: u16, n: usize) -> usize {
    let script = format!(
        "exec 3<>/dev/udp/{vip}/{port}; for i in $(seq {n}); do printf ping >&3; \
         timeout 2 dd bs=512 count=1 status=none <&3; echo; done",
        vip = lab::VIP
    );
    let o = e
        .lab
        .exec(&e.lab.client, &["bash", "-c", &script])
        .expect("udp burst");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("rs"))
        .count()
}

/// What lvs counted for the TCP and UDP services and what the servers' kernels counted.
struct Snapshot {
    stats: Vec<StatService>,
    /// Per server: TCP segments (in, out) as [`tcp_segs`] reads them.
    segs: Vec<(u64, u64)>,
}

impl Snapshot {
    fn take(e: &E2e) -> Snapshot {
        let segs = (0..2).map(|i| tcp_segs(e, &e.lab.servers[i])).collect();
        Snapshot {
            stats: e.stats(),
            segs,
        }
    }
    fn svc(&self, proto: &str) -> &StatService {
        self.stats
            .iter()
            .find(|s| s.svc.name.starts_with(proto))
            .unwrap_or_else(|| panic!("{proto} service in {:?}", self.stats))
    }
    /// (conns, in, out) of server `i` in the `proto` service.
    fn dest(&self, proto: &str, i: usize) -> (u64, u64, u64) {
        let d = dest(self.svc(proto), i);
        (d.conns, d.in_pkts, d.out_pkts)
    }
    /// Waits (bounded) until two snapshots in a row agree: the closing segments of the last
    /// connections have arrived and been counted.
    fn settled(e: &E2e) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = Snapshot::take(e);
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = Snapshot::take(e);
            let same = now.segs == last.segs
                && (0..2).all(|i| ["TCP", "UDP"].iter().all(|p| now.dest(p, i) == last.dest(p, i)));
            if same || Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    }
}

fn minus(a: (u64, u64, u64), b: (u64, u64, u64)) -> (u64, u64, u64) {
    (a.0 - b.0, a.1 - b.1, a.2 - b.2)
}

/// After N HTTP connections and M UDP datagrams (over K client sockets), per destination:
/// lvs's Conns grew by the HTTP requests (resp. UDP flows) the server answered, the UDP
/// InPkts/OutPkts by the datagrams the server received/answered, and the TCP InPkts/OutPkts by
/// the TCP segments the server's kernel received/sent. Measured as differences from a
/// snapshot taken after a warm-up request to each server, so that lvs's first resolution of
/// a server's MAC (whose SYN waits in the hold queue meanwhile) is
/// not part of it; the servers' own loopback (`/count`) is only used after the last
/// snapshot. DR and TUN servers answer the client directly, so there OutPkts stay 0: the
/// director never sees a reply.
fn counters(method: LabMethod, backend: &str) {
    if !require_root() {
        return;
    }
    const HTTP: usize = 7;
    const UDP_SOCKETS: usize = 3;
    const UDP_PER_SOCKET: usize = 4;
    // DR and TUN keep the port: their service is on the servers' 8080.
    let direct = matches!(method, LabMethod::DirectRoute | LabMethod::Tunnel);
    let vport = if direct { 8080 } else { 80 };
    // What lvs sees of a server's traffic: both directions, or only the inbound one.
    let seen = |(inp, out): (u64, u64)| if direct { (inp, 0) } else { (inp, out) };
    let rules = format!(
        "{}{}",
        two_servers(method, vport, 8080, "-t"),
        two_servers(method, 9000, 9000, "-u")
    );
    let mut e = E2e::start(method, 2, backend, &rules, &[]);
    // Warm-up: rr sends these two to different servers.
    let mut warm = [0u64; 2];
    for a in [e.until_ok(|e| e.http(vport)), e.http(vport).expect("http")] {
        warm[if who(&a) == "rs1" { 0 } else { 1 }] += 1;
    }
    assert_eq!(warm, [1, 1], "rr: one warm-up request per server");
    let base = Snapshot::settled(&e);
    for _ in 0..HTTP {
        e.http(vport).expect("http");
    }
    let mut answered = 0;
    for _ in 0..UDP_SOCKETS {
        answered += udp_burst(&e, 9000, UDP_PER_SOCKET);
    }
    assert_eq!(answered, UDP_SOCKETS * UDP_PER_SOCKET, "every datagram answered");
    let end = Snapshot::settled(&e);
    let counts: Vec<ServerCounts> = (0..2).map(|i| e.server_counts(i)).collect();
    let report = || format!("before: {:?}\nafter: {:?}", base.stats, end.stats);
    let mut http_total = 0;
    for si in 0..2 {
        let (tcp, udp, c) = (
            minus(end.dest("TCP", si), base.dest("TCP", si)),
            minus(end.dest("UDP", si), base.dest("UDP", si)),
            counts[si],
        );
        let name = lab::rs_ip(si);
        let http = c.http - warm[si];
        http_total += http;
        assert_eq!(
            tcp.0,
            http,
            "TCP conns of {name} vs its HTTP requests\n{}",
            report()
        );
        let segs = (end.segs[si].0 - base.segs[si].0, end.segs[si].1 - base.segs[si].1);
        assert_eq!(
            (tcp.1, tcp.2),
            seen(segs),
            "TCP packets of {name} vs the segments its kernel received/sent\n{}",
            report()
        );
        assert_eq!(
            (udp.1, udp.2),
            seen((c.udp, c.udp_answered)),
            "UDP packets of {name} vs datagrams it received/answered\n{}",
            report()
        );
        assert_eq!(udp.1 % UDP_PER_SOCKET as u64, 0, "whole flows\n{}", report());
        assert_eq!(
            udp.0,
            c.udp / UDP_PER_SOCKET as u64,
            "UDP flows of {name}\n{}",
            report()
        );
    }
    assert_eq!(http_total, HTTP as u64);
    let total = |snap: &Snapshot, p: &str| {
        let s = &snap.svc(p).svc;
        (s.conns, s.in_pkts, s.out_pkts)
    };
    assert_eq!(minus(total(&end, "TCP"), total(&base, "TCP")).0, HTTP as u64);
    let udp = minus(total(&end, "UDP"), total(&base, "UDP"));
    let sent = (UDP_SOCKETS * UDP_PER_SOCKET) as u64;
    assert_eq!(
        (udp.0, udp.1, udp.2),
        (UDP_SOCKETS as u64, sent, seen((0, sent)).1)
    );
    // Service totals are the sums of their destinations.
    for p in ["TCP", "UDP"] {
        let s = end.svc(p);
        let sum = |f: fn(&StatLine) -> u64| s.dests.iter().map(f).sum::<u64>();
        assert_eq!(
            (s.svc.conns, s.svc.in_pkts, s.svc.out_pkts),
            (sum(|d| d.conns), sum(|d| d.in_pkts), sum(|d| d.out_pkts)),
            "{:?}",
            end.stats
        );
    }
    e.stop();
}

matrix!(counters);
