//! IPv6 through lvs: a kernel client talks HTTP over IPv6 to a VIP6, NAT to IPv6 real servers
//! (lvs answers neighbour solicitations for the VIP and resolves the servers with its own).

mod e2e_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

fn nat6(backend: &str) {
    if !require_root() {
        return;
    }
    let rules = format!(
        "-A -t [{vip}]:80 -s rr\n-a -t [{vip}]:80 -r [{r1}]:8081 -m\n-a -t [{vip}]:80 -r [{r2}]:8081 -m\n",
        vip = lab::VIP6,
        r1 = lab::rs_ip6(0),
        r2 = lab::rs_ip6(1),
    );
    let opts = Opts {
        ipv6: true,
        ..Opts::default()
    };
    let e = E2e::start_with(LabMethod::Nat, 2, backend, &rules, &[], &opts);
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
    assert!(
        first.contains("[fd00:1::10]:"),
        "the server sees the IPv6 client: {first:?}"
    );
    let mut names = vec![who(&first).to_string()];
    for _ in 0..3 {
        names.push(who(&get(&e).expect("http")).to_string());
    }
    for w in names.windows(2) {
        assert_ne!(w[0], w[1], "rr alternates over IPv6: {names:?}");
    }
}

#[test]
fn nat_ipv6_afxdp() {
    nat6("afxdp");
}

#[test]
fn nat_ipv6_afpacket() {
    nat6("afpacket");
}
