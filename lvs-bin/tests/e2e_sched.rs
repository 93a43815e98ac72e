//! End to end, scheduling through `lvs run`: weighted round robin follows the weights,
//! persistence keeps a client on its server, and a firewall-mark service groups two ports of
//! one client onto one server — real kernel clients and servers in namespaces.

mod e2e_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

/// A second client address, added to the client namespace for tests that need two clients.
const CLIENT2: &str = "10.77.1.11";

/// The VIP port the service uses and the real servers' port part for `method`.
fn ports(method: LabMethod) -> (u16, String) {
    if matches!(method, LabMethod::DirectRoute | LabMethod::Tunnel) {
        (8080, String::new())
    } else {
        (80, ":8080".to_string())
    }
}

/// HTTP GET of VIP:port from the client, from `src` (a client address) when given.
fn http_src(e: &E2e, port: u16, src: Option<&str>) -> Result<String, String> {
    let url = format!("http://{}:{port}/", lab::VIP);
    let mut args = vec!["curl", "-s", "--max-time", "3"];
    if let Some(s) = src {
        args.extend(["--interface", s]);
    }
    args.push(&url);
    match e.lab.exec(&e.lab.client, &args) {
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(err) => Err(err.to_string()),
    }
}

fn add_second_client(e: &E2e) {
    e.lab
        .exec(
            &e.lab.client,
            &["ip", "addr", "add", &format!("{CLIENT2}/24"), "dev", "eth0"],
        )
        .expect("second client address");
}

/// wrr with weights 3 (rs1) and 1 (rs2): the kernel's wrr walks the destination list (newest
/// first: rs2, rs1) with a current weight starting at the maximum and dropping by the gcd each
/// pass, so 8 connections go rs1 rs1 rs2 rs1 | rs1 rs1 rs2 rs1 (6 to rs1, 2 to rs2).
fn wrr(method: LabMethod, backend: &str) {
    if !require_root() {
        return;
    }
    let (vport, rport) = ports(method);
    let f = flag(method);
    let rules = format!(
        "-A -t {vip}:{vport} -s wrr\n-a -t {vip}:{vport} -r {rs1}{rport} {f} -w 3\n\
         -a -t {vip}:{vport} -r {rs2}{rport} {f} -w 1\n",
        vip = lab::VIP,
        rs1 = lab::rs_ip(0),
        rs2 = lab::rs_ip(1),
    );
    let mut e = E2e::start(method, 2, backend, &rules, &[]);
    let first = e.until_ok(|e| e.http(vport));
    let mut seq = vec![who(&first).to_string()];
    for _ in 0..7 {
        seq.push(who(&e.http(vport).expect("http")).to_string());
    }
    let stats = e.stats();
    let svc = &stats[0];
    assert_eq!(
        svc.svc.conns, 8,
        "8 connections scheduled (no retried connects): {stats:?}"
    );
    assert_eq!(
        seq,
        ["rs1", "rs1", "rs2", "rs1", "rs1", "rs1", "rs2", "rs1"],
        "kernel wrr sequence for weights 3/1"
    );
    // lvs's per-destination counters agree with who answered.
    let conns_of = |ip: std::net::Ipv4Addr| {
        svc.dests
            .iter()
            .find(|d| d.name.starts_with(&format!("{ip}:")))
            .map(|d| d.conns)
            .unwrap_or_else(|| panic!("{ip} in {stats:?}"))
    };
    assert_eq!((conns_of(lab::rs_ip(0)), conns_of(lab::rs_ip(1))), (6, 2));
    e.stop();
}

/// `-p 60` over rr: every connection of one client goes to the server its first one got; a
/// second client gets the next server in rr order.
fn persistence(method: LabMethod, backend: &str) {
    if !require_root() {
        return;
    }
    let (vport, rport) = ports(method);
    let f = flag(method);
    let rules = format!(
        "-A -t {vip}:{vport} -s rr -p 60\n-a -t {vip}:{vport} -r {rs1}{rport} {f}\n\
         -a -t {vip}:{vport} -r {rs2}{rport} {f}\n",
        vip = lab::VIP,
        rs1 = lab::rs_ip(0),
        rs2 = lab::rs_ip(1),
    );
    let mut e = E2e::start(method, 2, backend, &rules, &[]);
    add_second_client(&e);
    let first = e.until_ok(|e| http_src(e, vport, Some(&lab::CLIENT_IP.to_string())));
    let home = who(&first).to_string();
    for i in 0..8 {
        let a = http_src(&e, vport, Some(&lab::CLIENT_IP.to_string())).expect("http");
        assert_eq!(who(&a), home, "connection {i} of client 1 left its server: {a:?}");
    }
    let other = e.until_ok(|e| http_src(e, vport, Some(CLIENT2)));
    let home2 = who(&other).to_string();
    assert_ne!(
        home2, home,
        "rr underneath: the second client gets the other server"
    );
    for i in 0..4 {
        let a = http_src(&e, vport, Some(CLIENT2)).expect("http");
        assert_eq!(
            who(&a),
            home2,
            "connection {i} of client 2 left its server: {a:?}"
        );
    }
    if method != LabMethod::FullNat {
        assert!(other.contains(CLIENT2), "server saw the second client: {other:?}");
    }
    // One template per client shows in the connection listing.
    let (code, conns, _) = e.adm(&["-L", "-n", "-c"]);
    assert_eq!(code, 0);
    let templates = conns.lines().filter(|l| l.contains("NONE")).count();
    assert_eq!(templates, 2, "two persistence templates:\n{conns}");
    e.stop();
}

/// `-A -f 1 -s rr -p 60` with `[[fwmark]]` marking VIP tcp ports 80 and 8081: both ports of
/// one client land on one server (the servers listen on both; the mark service keeps the
/// port); a second client lands on the other server.
fn fwmark(method: LabMethod, backend: &str) {
    if !require_root() {
        return;
    }
    let f = flag(method);
    let rules = format!(
        "-A -f 1 -s rr -p 60\n-a -f 1 -r {rs1} {f}\n-a -f 1 -r {rs2} {f}\n",
        rs1 = lab::rs_ip(0),
        rs2 = lab::rs_ip(1),
    );
    let toml = format!(
        "[[fwmark]]\nmark = 1\nproto = \"tcp\"\naddr = \"{}\"\nports = [\"80\", \"8081\"]\n",
        lab::VIP
    );
    let opts = Opts {
        http_ports: vec![8080, 80, 8081],
        toml: Some(toml),
        ..Opts::default()
    };
    let mut e = E2e::start_with(method, 2, backend, &rules, &[], &opts);
    add_second_client(&e);
    let c1 = lab::CLIENT_IP.to_string();
    let first = e.until_ok(|e| http_src(e, 80, Some(&c1)));
    let home = who(&first).to_string();
    for i in 0..3 {
        for port in [8081, 80] {
            let a = http_src(&e, port, Some(&c1)).expect("http");
            assert_eq!(who(&a), home, "round {i}, port {port}: {a:?}");
        }
    }
    let other = e.until_ok(|e| http_src(e, 8081, Some(CLIENT2)));
    let home2 = who(&other).to_string();
    assert_ne!(
        home2, home,
        "rr underneath: the second client gets the other server"
    );
    let a = http_src(&e, 80, Some(CLIENT2)).expect("http");
    assert_eq!(who(&a), home2, "second client, port 80: {a:?}");
    // A port outside the mark is not balanced.
    let url = format!("http://{}:8080/", lab::VIP);
    let outside = e
        .lab
        .exec(&e.lab.client, &["curl", "-s", "--max-time", "1", &url])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    assert!(
        outside.as_deref().map(str::is_empty).unwrap_or(true),
        "VIP:8080 is not part of the mark service: {outside:?}"
    );
    let stats = e.stats();
    let fwm = stats
        .iter()
        .find(|s| s.svc.name == "FWM 1")
        .unwrap_or_else(|| panic!("FWM 1 in {stats:?}"));
    assert_eq!(
        fwm.svc.conns, 9,
        "9 connections through the mark service: {stats:?}"
    );
    e.stop();
}

matrix!(wrr);
matrix!(persistence);
matrix!(fwmark);
