//! The `simulate` example's engine: rules in, one pick per connection and totals out.

use std::net::IpAddr;

use lvs_core::rules::{SimOptions, simulate};

const RR3: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m
-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m
-a -t 10.0.0.1:80 -r 192.168.1.3:80 -m
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn rr_alternates_in_kernel_list_order_and_totals_add_up() {
    let sim = simulate(
        RR3,
        &SimOptions {
            conns: 7,
            clients: 1,
            hold: false,
        },
    )
    .unwrap();
    // -a puts each new destination first, so rr starts with the last one added.
    let expected = "\
service TCP 10.0.0.1:80 rr
10.200.0.1:1024 -> 192.168.1.3:80
10.200.0.1:1025 -> 192.168.1.2:80
10.200.0.1:1026 -> 192.168.1.1:80
10.200.0.1:1027 -> 192.168.1.3:80
10.200.0.1:1028 -> 192.168.1.2:80
10.200.0.1:1029 -> 192.168.1.1:80
10.200.0.1:1030 -> 192.168.1.3:80
total 192.168.1.3:80 3
total 192.168.1.2:80 2
total 192.168.1.1:80 2
";
    assert_eq!(sim.to_string(), expected);
}

#[test]
fn clients_take_turns_with_ports_counting_up() {
    let sim = simulate(
        RR3,
        &SimOptions {
            conns: 5,
            clients: 2,
            hold: false,
        },
    )
    .unwrap();
    let clients: Vec<(IpAddr, u16)> = sim.services[0]
        .picks
        .iter()
        .map(|p| (p.client, p.client_port))
        .collect();
    assert_eq!(
        clients,
        vec![
            (ip("10.200.0.1"), 1024),
            (ip("10.200.0.2"), 1024),
            (ip("10.200.0.1"), 1025),
            (ip("10.200.0.2"), 1025),
            (ip("10.200.0.1"), 1026),
        ]
    );
}

#[test]
fn hold_keeps_connections_bound_so_thresholds_bite() {
    // 192.168.1.1 has an upper threshold of 2: only held connections can reach it.
    let rules = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m -x 2
-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m
";
    let totals = |hold| {
        let sim = simulate(
            rules,
            &SimOptions {
                conns: 6,
                clients: 3,
                hold,
            },
        )
        .unwrap();
        sim.services[0]
            .totals
            .iter()
            .map(|&((a, _), n)| (a, n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        totals(false),
        vec![(ip("192.168.1.2"), 3), (ip("192.168.1.1"), 3)]
    );
    assert_eq!(totals(true), vec![(ip("192.168.1.2"), 4), (ip("192.168.1.1"), 2)]);
}

#[test]
fn quiesced_and_missing_destinations() {
    let rules = "\
-A -u 10.0.0.1:53 -s rr
-a -u 10.0.0.1:53 -r 192.168.1.1:53 -m -w 0
-a -u 10.0.0.1:53 -r 192.168.1.2:53 -m
-A -t 10.0.0.2:80 -s rr
";
    let sim = simulate(
        rules,
        &SimOptions {
            conns: 3,
            clients: 1,
            hold: false,
        },
    )
    .unwrap();
    assert!(
        sim.services[0]
            .picks
            .iter()
            .all(|p| p.dest == Some((ip("192.168.1.2"), 53)))
    );
    assert_eq!(sim.services[0].totals[1], ((ip("192.168.1.1"), 53), 0));
    let text = sim.to_string();
    assert!(
        text.contains("service TCP 10.0.0.2:80 rr\n10.200.0.1:1024 -> none\n"),
        "{text}"
    );
}

#[test]
fn equal_weight_wrr_matches_rr() {
    // With all weights equal the kernel's wrr visits destinations in list order, like rr.
    let wrr = RR3.replace("-s rr", "-s wrr");
    let opts = SimOptions {
        conns: 6,
        clients: 1,
        hold: false,
    };
    let a = simulate(RR3, &opts).unwrap();
    let b = simulate(&wrr, &opts).unwrap();
    assert_eq!(a.services[0].picks, b.services[0].picks);
}

#[test]
fn bad_rules_name_the_line() {
    let err = simulate(
        "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.9:80 -r 192.168.1.1\n",
        &SimOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "line 2: Service not defined");
}
