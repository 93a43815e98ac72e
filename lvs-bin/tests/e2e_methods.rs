//! End to end, per forwarding method and backend: a real kernel client talks through `lvs
//! run` to real servers in network namespaces the test builds and removes.

mod e2e_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

fn rules(method: LabMethod, sched: &str) -> String {
    let f = flag(method);
    let port = |p: u16| {
        if matches!(method, LabMethod::DirectRoute | LabMethod::Tunnel) {
            String::new()
        } else {
            format!(":{p}")
        }
    };
    format!(
        "-A -t {vip}:80 -s {sched}\n-a -t {vip}:80 -r {rs1}{p1} {f}\n-a -t {vip}:80 -r {rs2}{p1} {f}\n\
         -A -u {vip}:9000 -s {sched}\n-a -u {vip}:9000 -r {rs1}{p2} {f}\n-a -u {vip}:9000 -r {rs2}{p2} {f}\n",
        vip = lab::VIP,
        rs1 = lab::rs_ip(0),
        rs2 = lab::rs_ip(1),
        p1 = port(8080),
        p2 = port(9000),
    )
}

fn method_round(method: LabMethod, backend: &str) {
    method_round_with(method, backend, &[], None);
}

/// [`method_round`] with extra `lvs run` arguments, and a line the lvs log must contain.
fn method_round_with(method: LabMethod, backend: &str, extra: &[&str], log_has: Option<&str>) {
    if !require_root() {
        return;
    }
    // DR/TUN keep the port: the servers listen on 8080, so the VIP service is on 8080 too.
    let vport = if matches!(method, LabMethod::DirectRoute | LabMethod::Tunnel) {
        8080
    } else {
        80
    };
    let r = rules(method, "rr").replace(":80 ", &format!(":{vport} "));
    let mut e = E2e::start(method, 2, backend, &r, extra);
    let first = e.until_ok(|e| e.http(vport));
    let mut names = vec![who(&first).to_string()];
    for _ in 0..5 {
        names.push(who(&e.http(vport).expect("http")).to_string());
    }
    // rr alternates between the two servers.
    for w in names.windows(2) {
        assert_ne!(w[0], w[1], "rr alternates: {names:?}");
    }
    assert!(names.iter().all(|n| n == "rs1" || n == "rs2"), "{names:?}");
    // The server sees the client (NAT, DR, TUN) or the LIP (FULLNAT).
    let seen = seen_client(&first);
    let want = if method == LabMethod::FullNat {
        lab::LIP.to_string()
    } else {
        lab::CLIENT_IP.to_string()
    };
    assert_eq!(seen, want, "address the server saw: {first:?}");
    // UDP through the VIP, answered by one of the servers.
    let u = e.until_ok(|e| e.udp(9000));
    assert!(u.starts_with("rs1 ") || u.starts_with("rs2 "), "udp answer {u:?}");
    // Counters: lvs counted the connections it scheduled.
    let (code, stats, _) = e.adm(&["-L", "-n", "--stats", "--exact"]);
    assert_eq!(code, 0);
    let tcp_line = stats
        .lines()
        .find(|l| l.starts_with("TCP"))
        .expect("TCP service in --stats");
    let conns: u64 = tcp_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(conns, 6, "6 HTTP connections scheduled:\n{stats}");
    if method == LabMethod::Tunnel {
        // The servers got the client's packets encapsulated (a plain frame to a server's MAC
        // would reach its VIP as well): each HTTP request is at least SYN, data and FIN, and
        // the UDP datagram adds one: 3 * 6 + 1.
        let decapsulated: u64 = (0..2).map(|i| e.decapsulated(i)).sum();
        assert!(
            decapsulated >= 19,
            "TUN: only {decapsulated} packets decapsulated for 6 requests and a datagram"
        );
    }
    if let Some(want) = log_has {
        let log = std::fs::read_to_string(e.dir.join("lvs.log")).unwrap_or_default();
        assert!(log.contains(want), "{want:?} not in the lvs log:\n{log}");
    }
    e.stop();
}

#[test]
fn nat_afxdp() {
    method_round(LabMethod::Nat, "afxdp");
}

#[test]
fn nat_afpacket() {
    method_round(LabMethod::Nat, "afpacket");
}

#[test]
fn fullnat_afxdp() {
    method_round(LabMethod::FullNat, "afxdp");
}

#[test]
fn fullnat_afpacket() {
    method_round(LabMethod::FullNat, "afpacket");
}

#[test]
fn dr_afxdp() {
    method_round(LabMethod::DirectRoute, "afxdp");
}

#[test]
fn dr_afpacket() {
    method_round(LabMethod::DirectRoute, "afpacket");
}

#[test]
fn tun_afxdp() {
    method_round(LabMethod::Tunnel, "afxdp");
}

#[test]
fn tun_afpacket() {
    method_round(LabMethod::Tunnel, "afpacket");
}

/// NAT through the AF_PACKET backend on its TPACKET_V3 receive ring; the daemon reports the
/// version the kernel runs its sockets with.
#[test]
fn nat_afpacket_v3() {
    method_round_with(
        LabMethod::Nat,
        "afpacket",
        &["--afpacket-ring", "v3"],
        Some("AF_PACKET receive ring TPACKET_V3 (V3 asked)"),
    );
}

/// The first connection to a real server whose MAC lvs does not know yet is not delayed by a
/// SYN retransmission (1 s): lvs holds the SYN while it asks for the MAC and sends it when
/// the answer comes. The server is added at run time to a new service, so no earlier traffic
/// or start-up resolution has taught lvs its MAC (without the hold queue the client's SYN is
/// retransmitted after 1 s).
fn first_request_to_a_new_server(backend: &str) {
    if !require_root() {
        return;
    }
    let rules = format!(
        "-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {rs1}:8080 -m\n",
        vip = lab::VIP,
        rs1 = lab::rs_ip(0)
    );
    let mut e = E2e::start(LabMethod::Nat, 2, backend, &rules, &[]);
    e.until_ok(|e| e.http(80));
    let vs = format!("{}:81", lab::VIP);
    let rs = format!("{}:8080", lab::rs_ip(1));
    assert_eq!(e.adm(&["-A", "-t", &vs, "-s", "rr"]).0, 0);
    assert_eq!(e.adm(&["-a", "-t", &vs, "-r", &rs, "-m"]).0, 0);
    // The client's kernel counts a SYN sent again in RetransSegs.
    let retrans = |e: &E2e| -> u64 {
        let o = e
            .lab
            .exec(&e.lab.client, &["cat", "/proc/net/snmp"])
            .expect("snmp");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
        let i = names.split_whitespace().position(|n| n == "RetransSegs").unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    let before = retrans(&e);
    let a = e.http(81).expect("http");
    assert_eq!(who(&a), "rs2", "answer {a:?}");
    assert_eq!(
        retrans(&e) - before,
        0,
        "the client had to send again: the first SYN to a new server was lost"
    );
    e.stop();
}

#[test]
fn first_request_to_a_new_server_afpacket() {
    first_request_to_a_new_server("afpacket");
}

#[test]
fn first_request_to_a_new_server_afxdp() {
    first_request_to_a_new_server("afxdp");
}

/// lvs ages its neighbours like the kernel, on the served interface's
/// `base_reachable_time_ms` (1 s here): live neighbours answer its unicast ARP probes and stay
/// (traffic flows, nothing is forgotten over several probe rounds); a real server that stops
/// answering ARP is forgotten after three unanswered probes.
fn neighbours_are_probed_and_a_silent_one_is_forgotten(backend: &str) {
    if !require_root() {
        return;
    }
    let rules = rules(LabMethod::Nat, "rr");
    let opts = Opts {
        director_sysctls: vec!["net.ipv4.neigh.eth0.base_reachable_time_ms=1000".into()],
        ..Opts::default()
    };
    let mut e = E2e::start_with(LabMethod::Nat, 2, backend, &rules, &[], &opts);
    e.until_ok(|e| e.http(80));
    let log = |e: &E2e| std::fs::read_to_string(e.dir.join("lvs.log")).unwrap_or_default();
    assert!(
        log(&e).contains("neighbours: trusted 1 s after a confirmation, then 3 unicast probes"),
        "{}",
        log(&e)
    );
    // Several probe rounds (1 s trusted + 3 probes) with both servers and the client live.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut seen = std::collections::BTreeSet::new();
    while std::time::Instant::now() < end {
        let a = e
            .http(80)
            .unwrap_or_else(|err| panic!("{err}; lvs log:\n{}", log(&e)));
        seen.insert(who(&a).to_string());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(seen.len(), 2, "both servers answered: {seen:?}");
    assert!(
        !log(&e).contains("forgot"),
        "a live neighbour was forgotten (its probe answers did not count):\n{}",
        log(&e)
    );
    // rs2's kernel stops sending ARP (answers included).
    let rs2 = e.lab.servers[1].clone();
    e.lab
        .exec(
            &rs2,
            &[
                "sh",
                "-c",
                "nft add table arp lvstest && \
                 nft add chain arp lvstest out '{ type filter hook output priority 0; }' && \
                 nft add rule arp lvstest out drop",
            ],
        )
        .expect("nft in rs2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log(&e).contains("forgot 1 neighbour(s) that answered none of 3 probes") {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent server was not forgotten within 10 s:\n{}",
            log(&e)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    e.stop();
}

#[test]
fn neighbours_are_probed_and_a_silent_one_is_forgotten_afpacket() {
    neighbours_are_probed_and_a_silent_one_is_forgotten("afpacket");
}

#[test]
fn neighbours_are_probed_and_a_silent_one_is_forgotten_afxdp() {
    neighbours_are_probed_and_a_silent_one_is_forgotten("afxdp");
}
