//! IPv6 through lvs in every forwarding method: a kernel client talks HTTP over IPv6 to a VIP6
//! and lvs forwards to IPv6 real servers by NAT, FULLNAT (from an IPv6 LIP), DR and TUN
//! (IPv6-in-IPv6, decapsulated by `lvs decap` on the servers). lvs answers neighbour
//! solicitations for the VIP and the LIP and resolves the servers with its own.

mod e2e_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

fn ipv6(method: LabMethod, backend: &str) {
    if !require_root() {
        return;
    }
    let rules = format!(
        "-A -t [{vip}]:80 -s rr\n-a -t [{vip}]:80 -r [{r1}]:8081 {f}\n-a -t [{vip}]:80 -r [{r2}]:8081 {f}\n",
        vip = lab::VIP6,
        r1 = lab::rs_ip6(0),
        r2 = lab::rs_ip6(1),
        f = flag(method),
    );
    let opts = Opts {
        ipv6: true,
        ..Opts::default()
    };
    // DR and TUN keep the port: their servers listen on [::]:80.
    let rules = match method {
        LabMethod::DirectRoute | LabMethod::Tunnel => rules.replace("]:8081", "]:80"),
        _ => rules,
    };
    let e = E2e::start_with(method, 2, backend, &rules, &[], &opts);
    let url = format!("http://[{}]:80/", lab::VIP6);
    let get = |e: &E2e| -> Result<String, String> {
        e.lab
            .exec(
                &e.lab.client,
                &["curl", "-6", "-g", "-s", "--max-time", "3", &url],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|x| x.to_string())
    };
    let first = e.until_ok(get);
    let seen = match method {
        LabMethod::FullNat => format!("[{}]:", lab::LIP6),
        _ => "[fd00:1::10]:".to_string(),
    };
    assert!(
        first.contains(&seen),
        "{method:?}: the server sees {seen} as the peer: {first:?}"
    );
    let mut names = vec![who(&first).to_string()];
    for _ in 0..3 {
        names.push(who(&get(&e).expect("http")).to_string());
    }
    for w in names.windows(2) {
        assert_ne!(w[0], w[1], "{method:?}: rr alternates over IPv6: {names:?}");
    }
    if method == LabMethod::Tunnel {
        // Every request is at least SYN, ACK with data and FIN: all of them arrived
        // encapsulated (a plain frame to the server's MAC would reach its VIP6 too).
        let decapsulated: u64 = (0..2).map(|i| e.decapsulated(i)).sum();
        assert!(
            decapsulated >= 3 * names.len() as u64,
            "TUN: {decapsulated} packets decapsulated for {} requests",
            names.len()
        );
    }
}

#[test]
fn nat_ipv6_afxdp() {
    ipv6(LabMethod::Nat, "afxdp");
}

#[test]
fn nat_ipv6_afpacket() {
    ipv6(LabMethod::Nat, "afpacket");
}

#[test]
fn fullnat_ipv6_afxdp() {
    ipv6(LabMethod::FullNat, "afxdp");
}

#[test]
fn fullnat_ipv6_afpacket() {
    ipv6(LabMethod::FullNat, "afpacket");
}

#[test]
fn dr_ipv6_afxdp() {
    ipv6(LabMethod::DirectRoute, "afxdp");
}

#[test]
fn dr_ipv6_afpacket() {
    ipv6(LabMethod::DirectRoute, "afpacket");
}

#[test]
fn tun_ipv6_afxdp() {
    ipv6(LabMethod::Tunnel, "afxdp");
}

#[test]
fn tun_ipv6_afpacket() {
    ipv6(LabMethod::Tunnel, "afpacket");
}
