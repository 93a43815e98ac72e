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

/// TCP segments the namespace `ns` received and sent (`/proc/net/snmp` Tcp InSegs, OutSegs).
fn tcp_segs(e: &E2e, ns: &str) -> (u64, u64) {
    let o = e.lab.exec(ns, &["cat", "/proc/net/snmp"]).expect("snmp");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let field = |k: &str| -> u64 {
        let i = names.split_whitespace().position(|n| n == k).unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    (field("InSegs"), field("OutSegs"))
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

/// After N HTTP connections and M UDP datagrams (over K client sockets): per destination,
/// lvs's Conns equal the HTTP requests (resp. UDP flows) the server answered, the UDP
/// InPkts/OutPkts equal the datagrams the server received/answered, and the TCP InPkts/OutPkts
/// equal the TCP segments the server's kernel received/sent (the lab's servers talk to nothing
/// else over TCP but their own loopback, which is read after).
fn counters_round(method: LabMethod, backend: &str) {
    if !require_root() {
        return;
    }
    const HTTP: usize = 7;
    const UDP_SOCKETS: usize = 3;
    const UDP_PER_SOCKET: usize = 4;
    let rules = format!(
        "{}{}",
        two_servers(method, 80, 8080, "-t"),
        two_servers(method, 9000, 9000, "-u")
    );
    let mut e = E2e::start(method, 2, backend, &rules, &[]);
    e.until_ok(|e| e.http(80));
    for _ in 1..HTTP {
        e.http(80).expect("http");
    }
    let mut answered = 0;
    for _ in 0..UDP_SOCKETS {
        answered += udp_burst(&e, 9000, UDP_PER_SOCKET);
    }
    assert_eq!(answered, UDP_SOCKETS * UDP_PER_SOCKET, "every datagram answered");
    // Let the closing segments of the last connection arrive, then compare (bounded).
    let deadline = Instant::now() + Duration::from_secs(3);
    let (stats, segs) = loop {
        let segs: Vec<(u64, u64)> = (0..2).map(|i| tcp_segs(&e, &e.lab.servers[i])).collect();
        let stats = e.stats();
        let tcp = stats.iter().find(|s| s.svc.name.starts_with("TCP")).unwrap();
        let settled = (0..2).all(|i| {
            let d = dest(tcp, i);
            (d.in_pkts, d.out_pkts) == segs[i]
        });
        if settled || Instant::now() >= deadline {
            break (stats, segs);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let counts: Vec<ServerCounts> = (0..2).map(|i| e.server_counts(i)).collect();
    let tcp = stats.iter().find(|s| s.svc.name.starts_with("TCP")).unwrap();
    let udp = stats.iter().find(|s| s.svc.name.starts_with("UDP")).unwrap();
    for si in 0..2 {
        let (td, ud, c) = (dest(tcp, si), dest(udp, si), counts[si]);
        assert_eq!(
            td.conns, c.http,
            "TCP conns of {} vs its HTTP requests: {stats:?}",
            td.name
        );
        assert_eq!(
            (td.in_pkts, td.out_pkts),
            segs[si],
            "TCP packets of {} vs the segments its kernel received/sent",
            td.name
        );
        assert_eq!(
            (ud.in_pkts, ud.out_pkts),
            (c.udp, c.udp_answered),
            "UDP packets of {} vs datagrams it received/answered: {stats:?}",
            ud.name
        );
        assert_eq!(ud.in_pkts % UDP_PER_SOCKET as u64, 0, "whole flows: {stats:?}");
        assert_eq!(
            ud.conns,
            c.udp / UDP_PER_SOCKET as u64,
            "UDP flows of {}",
            ud.name
        );
    }
    assert_eq!(tcp.svc.conns, HTTP as u64);
    assert_eq!(counts[0].http + counts[1].http, HTTP as u64);
    assert_eq!(udp.svc.conns, UDP_SOCKETS as u64);
    assert_eq!(udp.svc.in_pkts, (UDP_SOCKETS * UDP_PER_SOCKET) as u64);
    assert_eq!(udp.svc.out_pkts, (UDP_SOCKETS * UDP_PER_SOCKET) as u64);
    // Service totals are the sums of their destinations.
    for s in [tcp, udp] {
        let sum = |f: fn(&StatLine) -> u64| s.dests.iter().map(f).sum::<u64>();
        assert_eq!(
            (s.svc.conns, s.svc.in_pkts, s.svc.out_pkts),
            (sum(|d| d.conns), sum(|d| d.in_pkts), sum(|d| d.out_pkts)),
            "{stats:?}"
        );
    }
    e.stop();
}

#[test]
fn counters_nat_afxdp() {
    counters_round(LabMethod::Nat, "afxdp");
}

#[test]
fn counters_nat_afpacket() {
    counters_round(LabMethod::Nat, "afpacket");
}

#[test]
fn counters_fullnat_afxdp() {
    counters_round(LabMethod::FullNat, "afxdp");
}
