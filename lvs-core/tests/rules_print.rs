//! ipvsadm 1.31 listings, byte for byte. Every expected line below was written from the
//! printf format in ipvsadm.c that prints it (named in the comment above each block), e.g.
//! `"  -> %-28s %-7s %-6d %-10u %-10u\n"`; note the trailing padding of the last `%-10u`.

use lvs_core::stats::StatsWriter;
use std::sync::Arc;

use lvs_core::dest::ConnClass;
use lvs_core::rules::{ListOptions, RuleSet, config_views, format_list, format_save, format_timeouts, views};
use lvs_core::rules::{RuleError, Timeouts};
use lvs_core::{Protocol, ServiceKey, ServiceSet, ServiceTable, Time};

const RULES: &str = "\
-A -t 10.0.0.1:80 -s wlc -p 300 -M 255.255.255.0
-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m -w 3 -x 10 -y 5
-a -t 10.0.0.1:80 -r 192.168.1.10:80 -m -w 1
-A -u 10.0.0.1:53 -s rr -o
-a -u 10.0.0.1:53 -r 192.168.1.3:53 -g -w 2
-A -f 5 -s sh -b sh-fallback,sh-port
-a -f 5 -r 192.168.1.4 -i
-A -t [2001:db8::1]:443 -s mh -b mh-port -p 60 -M 64
-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 --fullnat -w 5
-A -t 9.0.0.1:8080 -s rr
-a -t 9.0.0.1:8080 -r 192.168.2.1:8080 -m
-a -t 9.0.0.1:8080 -r 192.168.1.200:8080 -m
";

fn web() -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: [10, 0, 0, 1].into(),
        port: 80,
    }
}

fn ruleset() -> RuleSet {
    let mut rs = RuleSet::new();
    rs.apply_batch(RULES).expect("rules load");
    rs
}

fn published() -> (ServiceTable, Arc<ServiceSet>) {
    let table = ServiceTable::new();
    let set = table.publish(&ruleset().services);
    (table, set)
}

fn opts() -> ListOptions {
    ListOptions {
        numeric: true,
        ..Default::default()
    }
}

#[test]
fn save_format_sorted_like_ipvsadm() {
    // "-A %s -s %s" + " -p %u" + " -M %s" (inet_ntoa) / " -M %i" + " -o" + " -b %s";
    // "-a %s -r %s %s -w %d\n"; tunnels: print_tunnel_rule's "... --tun-type ipip".
    // Services sort by fwmark, family, protocol, address, port; destinations by address, port.
    let expected = "\
-A -t 9.0.0.1:8080 -s rr
-a -t 9.0.0.1:8080 -r 192.168.1.200:8080 -m -w 1
-a -t 9.0.0.1:8080 -r 192.168.2.1:8080 -m -w 1
-A -t 10.0.0.1:80 -s wlc -p 300 -M 255.255.255.0
-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m -w 3
-a -t 10.0.0.1:80 -r 192.168.1.10:80 -m -w 1
-A -u 10.0.0.1:53 -s rr -o
-a -u 10.0.0.1:53 -r 192.168.1.3:53 -g -w 2
-A -t [2001:db8::1]:443 -s mh -p 60 -M 64 -b mh-port
-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 --fullnat -w 5
-A -f 5 -s sh -b sh-fallback,sh-port
-a -f 5 -r 192.168.1.4:0 -i -w 1 --tun-type ipip
";
    assert_eq!(format_save(&config_views(&ruleset().services)), expected);
    let (_t, set) = published();
    assert_eq!(format_save(&views(&set)), expected, "a live set saves the same");
}

#[test]
fn save_output_restores_to_the_same_save_output() {
    let saved = format_save(&config_views(&ruleset().services));
    let mut again = RuleSet::new();
    again.apply_batch(&saved).unwrap();
    assert_eq!(format_save(&config_views(&again.services)), saved);
    // Restoring sorted `-a` lines reverses each kernel list (each -a goes to the front).
    let svc = again.service(&web()).unwrap();
    assert_eq!(svc.dests[0].addr, std::net::IpAddr::from([192, 168, 1, 10]));
}

#[test]
fn list_numeric_default_format() {
    let (_t, set) = published();
    let d = set
        .get(&web())
        .unwrap()
        .dest([192, 168, 1, 2].into(), 80)
        .unwrap();
    d.state.bind(ConnClass::Active);
    d.state.bind(ConnClass::Active);
    d.state.bind(ConnClass::Inactive);
    d.state.bind(ConnClass::Template);
    // list_all: "IP Virtual Server version %d.%d.%d (size=%d)\n"; print_title's default pair;
    // services: "%s %s" (svc_name "%-4s %s", scheduler) + " (%s)" flags + " persistent %u"
    // + " mask %s" + " ops"; FWM: "FWM  %u"; destinations "  -> %-28s %-7s %-6d %-10u %-10u\n".
    let expected = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        "TCP  9.0.0.1:8080 rr\n",
        "  -> 192.168.1.200:8080           Masq    1      0          0         \n",
        "  -> 192.168.2.1:8080             Masq    1      0          0         \n",
        "TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0\n",
        "  -> 192.168.1.2:80               Masq    3      2          1         \n",
        "  -> 192.168.1.10:80              Masq    1      0          0         \n",
        "UDP  10.0.0.1:53 rr ops\n",
        "  -> 192.168.1.3:53               Route   2      0          0         \n",
        "TCP  [2001:db8::1]:443 mh (mh-port) persistent 60 mask 64\n",
        "  -> [2001:db8::10]:8443          FullNat 5      0          0         \n",
        "FWM  5 sh (sh-fallback,sh-port)\n",
        "  -> 192.168.1.4:0                Tunnel  1      0          0         \n",
    );
    assert_eq!(format_list(&views(&set), &opts(), 4096).unwrap(), expected);
    let small = format_list(&views(&set), &opts(), 1024).unwrap();
    assert!(small.starts_with("IP Virtual Server version 1.2.1 (size=1024)\n"));
}

#[test]
fn list_nosort_keeps_configuration_and_kernel_order() {
    let (_t, set) = published();
    let o = ListOptions {
        nosort: true,
        ..opts()
    };
    let text = format_list(&views(&set), &o, 4096).unwrap();
    let firsts: Vec<&str> = text
        .lines()
        .skip(3)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        firsts,
        [
            "10.0.0.1:80",
            "192.168.1.10:80",
            "192.168.1.2:80",
            "10.0.0.1:53",
            "192.168.1.3:53",
            "5",
            "192.168.1.4:0",
            "[2001:db8::1]:443",
            "[2001:db8::10]:8443",
            "9.0.0.1:8080",
            "192.168.1.200:8080",
            "192.168.2.1:8080",
        ]
    );
}

fn load_counters(set: &ServiceSet) {
    let svc = set.get(&web()).unwrap();
    for _ in 0..5 {
        svc.stats.add_conn(&StatsWriter::shared());
    }
    svc.stats
        .add_in(&StatsWriter::shared(), 123_456_789, 5_000_000_000);
    svc.stats.add_out(&StatsWriter::shared(), 1000, 99_999_999);
    let d = svc.dest([192, 168, 1, 2].into(), 80).unwrap();
    for _ in 0..3 {
        d.state.stats.add_conn(&StatsWriter::new());
    }
    d.state
        .stats
        .add_in(&StatsWriter::shared(), 100, 100_000_000_000_000);
    d.state.stats.add_out(&StatsWriter::shared(), 0, 42);
}

#[test]
fn list_stats_of_one_service_with_k_m_t_abbreviations() {
    let (_t, set) = published();
    load_counters(&set);
    // list_service prints no version header. print_title: "%-33s %8s %8s %8s %8s %8s\n" then
    // "  -> RemoteAddress:Port\n"; rows "%-33s" / "  -> %-28s" then print_largenum ("%9llu", or
    // "%8lluK/M/G/T" from 100 million up).
    let o = ListOptions {
        stats: true,
        service: Some(web()),
        ..opts()
    };
    let expected = concat!(
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n",
        "  -> RemoteAddress:Port\n",
        "TCP  10.0.0.1:80                         5  123456K     1000    5000M 99999999\n",
        "  -> 192.168.1.2:80                      3      100        0     100T       42\n",
        "  -> 192.168.1.10:80                     0        0        0        0        0\n",
    );
    assert_eq!(format_list(&views(&set), &o, 4096).unwrap(), expected);

    // --exact: "%*llu" with width 9, or length + 1 for longer numbers.
    let exact = ListOptions { exact: true, ..o };
    let text = format_list(&views(&set), &exact, 4096).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[2],
        "TCP  10.0.0.1:80                         5 123456789     1000 5000000000 99999999"
    );
    assert_eq!(
        lines[3],
        "  -> 192.168.1.2:80                      3      100        0 100000000000000       42"
    );
}

#[test]
fn list_rate_uses_the_estimator() {
    let (_t, set) = published();
    let svc = set.get(&web()).unwrap();
    let d = svc.dest([192, 168, 1, 2].into(), 80).unwrap();
    svc.stats.estimate(Time::ZERO);
    d.state.stats.estimate(Time::ZERO);
    for c in [&*svc.stats, &d.state.stats] {
        for _ in 0..800 {
            c.add_conn(&StatsWriter::shared());
        }
        c.add_in(&StatsWriter::shared(), 8000, 4_000_000_000);
        c.add_out(&StatsWriter::shared(), 4000, 0);
        c.estimate(Time::from_secs(2));
    }
    // One 2 s step from zero reads a quarter of the rate: 400 cps -> 100, 4000 pps -> 1000,
    // 2000 pps -> 500, 2e9 B/s -> 5e8 ("  500000K"). Destination rows print cps/pps with
    // "  -> %-28s %8llu %8llu %8llu" and only the byte rates through print_largenum.
    let o = ListOptions {
        rate: true,
        service: Some(web()),
        ..opts()
    };
    let expected = concat!(
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n",
        "  -> RemoteAddress:Port\n",
        "TCP  10.0.0.1:80                       100     1000      500  500000K        0\n",
        "  -> 192.168.1.2:80                    100     1000      500  500000K        0\n",
        "  -> 192.168.1.10:80                     0        0        0        0        0\n",
    );
    assert_eq!(format_list(&views(&set), &o, 4096).unwrap(), expected);
}

#[test]
fn list_thresholds_and_persistent_conn() {
    let (_t, set) = published();
    let d = set
        .get(&web())
        .unwrap()
        .dest([192, 168, 1, 2].into(), 80)
        .unwrap();
    d.state.bind(ConnClass::Active);
    d.state.bind(ConnClass::Active);
    d.state.bind(ConnClass::Inactive);
    d.state.bind(ConnClass::Template);
    // "%-33s %-10s %-10s %-10s %-10s\n" title; service row as in the default format;
    // "  -> %-28s %-10u %-10u %-10u %-10u\n".
    let o = ListOptions {
        thresholds: true,
        service: Some(web()),
        ..opts()
    };
    let expected = concat!(
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n",
        "  -> RemoteAddress:Port\n",
        "TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0\n",
        "  -> 192.168.1.2:80               10         5          2          1         \n",
        "  -> 192.168.1.10:80              0          0          0          0         \n",
    );
    assert_eq!(format_list(&views(&set), &o, 4096).unwrap(), expected);
    // "%-33s %-9s %-11s %-10s %-10s\n" title; "  -> %-28s %-9u %-11u %-10u %-10u\n".
    let o = ListOptions {
        persistent_conn: true,
        service: Some(web()),
        ..opts()
    };
    let expected = concat!(
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n",
        "  -> RemoteAddress:Port\n",
        "TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0\n",
        "  -> 192.168.1.2:80               3         1           2          1         \n",
        "  -> 192.168.1.10:80              1         0           0          0         \n",
    );
    assert_eq!(format_list(&views(&set), &o, 4096).unwrap(), expected);
}

#[test]
fn list_of_missing_service_and_timeouts() {
    let (_t, set) = published();
    let o = ListOptions {
        service: Some(ServiceKey::Addr {
            proto: Protocol::Udp,
            addr: [10, 9, 9, 9].into(),
            port: 1,
        }),
        ..opts()
    };
    assert_eq!(format_list(&views(&set), &o, 4096), Err(RuleError::NoSuchService));
    assert_eq!(
        format_timeouts(&Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
}

#[test]
fn sched_flag_3_on_sh_prints_empty_parentheses_as_ipvsadm_does() {
    // print_sched_flags names only fallback/port for sh; flag-3 still opens " (" ... ")".
    let mut rs = RuleSet::new();
    rs.apply_batch("-A -t 10.0.0.1:80 -s sh -b flag-3\n").unwrap();
    let text = format_list(&config_views(&rs.services), &opts(), 4096).unwrap();
    assert_eq!(text.lines().nth(3), Some("TCP  10.0.0.1:80 sh ()"));
    assert_eq!(
        format_save(&config_views(&rs.services)),
        "-A -t 10.0.0.1:80 -s sh -b \n"
    );
}
