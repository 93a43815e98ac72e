//! ipvsadm command-line parsing: defaults, option forms and ipvsadm 1.31's error messages.

use std::net::{IpAddr, Ipv4Addr};

use lvs_core::dest::ForwardMethod;
use lvs_core::rules::{Command, ListOptions, Timeouts, parse_args, parse_line};
use lvs_core::service::AddrFamily;
use lvs_core::{PersistNetmask, Persistence, Protocol, SchedFlags, SchedulerKind, ServiceKey};

fn p(line: &str) -> Command {
    match parse_line(line) {
        Ok(Some(c)) => c,
        other => panic!("{line}: {other:?}"),
    }
}

fn e(line: &str) -> String {
    match parse_line(line) {
        Err(e) => e.to_string(),
        other => panic!("{line}: expected an error, got {other:?}"),
    }
}

fn tcp(a: [u8; 4], port: u16) -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: IpAddr::from(a),
        port,
    }
}

#[test]
fn add_service_from_save_line() {
    let Command::AddService(cfg) = p("-A -t 10.0.0.1:80 -s wlc -p 300 -M 255.255.255.0") else {
        panic!()
    };
    assert_eq!(cfg.key, tcp([10, 0, 0, 1], 80));
    assert_eq!(cfg.scheduler, SchedulerKind::Wlc);
    assert_eq!(
        cfg.persistence,
        Some(Persistence {
            timeout_secs: 300,
            netmask: PersistNetmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
        })
    );
    assert!(cfg.dests.is_empty());
}

#[test]
fn service_defaults_wlc_no_persistence() {
    let Command::AddService(cfg) = p("-A -t 10.0.0.1:80") else {
        panic!()
    };
    assert_eq!(cfg.scheduler, SchedulerKind::Wlc);
    assert_eq!(cfg.persistence, None);
    assert_eq!(cfg.sched_flags, SchedFlags::NONE);
    assert!(!cfg.one_packet);
}

#[test]
fn persistent_timeout_is_optional_and_defaults_to_300() {
    for line in [
        "-A -t 10.0.0.1:80 -p",
        "-A -t 10.0.0.1:80 -p -s rr",
        "-A -t 10.0.0.1:80 --persistent",
    ] {
        let Command::AddService(cfg) = p(line) else {
            panic!()
        };
        let per = cfg.persistence.expect(line);
        assert_eq!(per.timeout_secs, 300, "{line}");
        assert_eq!(per.netmask, PersistNetmask::V4(Ipv4Addr::BROADCAST));
    }
    for line in [
        "-A -t 10.0.0.1:80 -p 60",
        "-A -t 10.0.0.1:80 -p60",
        "-A -t 10.0.0.1:80 --persistent=60",
    ] {
        let Command::AddService(cfg) = p(line) else {
            panic!()
        };
        assert_eq!(cfg.persistence.unwrap().timeout_secs, 60, "{line}");
    }
    assert_eq!(e("-A -t 10.0.0.1:80 -p 0"), "invalid timeout value `0' specified");
    assert_eq!(
        e("-A -t 10.0.0.1:80 -p 2678401"),
        "invalid timeout value `2678401' specified"
    );
}

#[test]
fn add_dest_from_save_line_with_thresholds() {
    let Command::AddDest { service, dest } = p("-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -w 3 -x 10 -y 5")
    else {
        panic!()
    };
    assert_eq!(service, tcp([10, 0, 0, 1], 80));
    assert_eq!(dest.addr, IpAddr::from([192, 168, 1, 2]));
    assert_eq!(dest.port, 8080, "NAT keeps the given port");
    assert_eq!(dest.method, ForwardMethod::Masq);
    assert_eq!(
        (dest.weight, dest.upper_threshold, dest.lower_threshold),
        (3, 10, 5)
    );
}

#[test]
fn dest_defaults_route_weight_1_service_port() {
    let Command::AddDest { dest, .. } = p("-a -t 10.0.0.1:80 -r 192.168.1.2") else {
        panic!()
    };
    assert_eq!(
        (dest.port, dest.weight, dest.method),
        (80, 1, ForwardMethod::DirectRoute)
    );
    // DR and TUN cannot map ports: ipvsadm forces the service port.
    let Command::AddDest { dest, .. } = p("-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -g") else {
        panic!()
    };
    assert_eq!(dest.port, 80);
    let Command::AddDest { dest, .. } = p("-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -i") else {
        panic!()
    };
    assert_eq!((dest.port, dest.method), (80, ForwardMethod::Tunnel));
    let Command::AddDest { dest, .. } = p("-a -t 10.0.0.1:80 -r 192.168.1.2:8080 --fullnat") else {
        panic!()
    };
    assert_eq!((dest.port, dest.method), (8080, ForwardMethod::FullNat));
}

#[test]
fn fwmark_dest_without_port_gets_port_zero() {
    let Command::AddDest { service, dest } = p("-a -f 5 -r 192.168.1.2 -m") else {
        panic!()
    };
    assert_eq!(
        service,
        ServiceKey::Fwmark {
            mark: 5,
            family: AddrFamily::Inet
        }
    );
    assert_eq!(dest.port, 0);
    // A fwmark service keeps the given port even for DR.
    let Command::AddDest { dest, .. } = p("-a -f 5 -r 192.168.1.2:8080 -g") else {
        panic!()
    };
    assert_eq!(dest.port, 8080);
}

#[test]
fn fwmark_ipv6_and_prefix_netmask() {
    let Command::AddService(cfg) = p("-A -f 7 -6 -s sh -b sh-port,sh-fallback -p 60 -M 64") else {
        panic!()
    };
    assert_eq!(
        cfg.key,
        ServiceKey::Fwmark {
            mark: 7,
            family: AddrFamily::Inet6
        }
    );
    assert_eq!(cfg.sched_flags, SchedFlags::FLAG1 | SchedFlags::FLAG2);
    assert_eq!(cfg.persistence.unwrap().netmask, PersistNetmask::V6(64));
    // -6 resets the mask to /128, as ipvsadm does, even after an IPv4 -M.
    let Command::AddService(cfg) = p("-A -f 7 -p -M 255.255.255.0 -6") else {
        panic!()
    };
    assert_eq!(cfg.persistence.unwrap().netmask, PersistNetmask::V6(128));
    assert_eq!(e("-A -6 -f 7"), "-6 used before -f");
    assert_eq!(e("-A -f 7 -6 -p -M 129"), "illegal ipv6 netmask specified");
    assert_eq!(e("-A -f 0"), "invalid fwmark value `0' specified");
}

#[test]
fn ipv6_service_in_brackets() {
    let Command::AddService(cfg) = p("-A -t [2001:db8::1]:443 -s rr") else {
        panic!()
    };
    assert_eq!(
        cfg.key,
        ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 443
        }
    );
    let Command::AddDest { dest, .. } = p("-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m -w 2") else {
        panic!()
    };
    assert_eq!((dest.addr, dest.port), ("2001:db8::10".parse().unwrap(), 8443));
    assert_eq!(
        e("-a -t [2001:db8::1]:443 -r 10.0.0.2 -m"),
        "Different address family is allowed only for tunneling servers"
    );
}

#[test]
fn long_options_and_grouped_short_options() {
    assert_eq!(
        p("--add-service --tcp-service 10.0.0.1:80 --scheduler rr"),
        p("-A -t 10.0.0.1:80 -s rr")
    );
    assert_eq!(
        p(
            "--add-server --udp-service 10.0.0.1:53 --real-server 10.1.1.1:53 --masquerading --weight 4 --u-threshold 9 --l-threshold 2"
        ),
        p("-a -u 10.0.0.1:53 -r 10.1.1.1:53 -m -w 4 -x 9 -y 2")
    );
    assert_eq!(
        p("-a -t 10.0.0.1:80 -r10.1.1.1 -w7"),
        p("-a -t 10.0.0.1:80 -r 10.1.1.1 -w 7")
    );
    assert_eq!(
        p("-Ln"),
        Command::List(ListOptions {
            numeric: true,
            ..Default::default()
        })
    );
    let Command::List(o) = p("--list --numeric --stats --exact -t 10.0.0.1:80") else {
        panic!()
    };
    assert!(o.numeric && o.stats && o.exact);
    assert_eq!(o.service, Some(tcp([10, 0, 0, 1], 80)));
    assert!(matches!(
        p("--delete-service --sctp-service 1.2.3.4:9"),
        Command::DeleteService(ServiceKey::Addr {
            proto: Protocol::Sctp,
            port: 9,
            ..
        })
    ));
}

#[test]
fn every_command() {
    assert_eq!(p("-C"), Command::Clear);
    assert_eq!(p("--clear"), Command::Clear);
    assert_eq!(
        p("-D -t 10.0.0.1:80"),
        Command::DeleteService(tcp([10, 0, 0, 1], 80))
    );
    assert_eq!(
        p("-d -t 10.0.0.1:80 -r 10.1.1.1"),
        Command::DeleteDest {
            service: tcp([10, 0, 0, 1], 80),
            addr: IpAddr::from([10, 1, 1, 1]),
            port: 80
        }
    );
    assert!(
        matches!(p("-e -t 10.0.0.1:80 -r 10.1.1.1 -w 0"), Command::EditDest { dest, .. } if dest.weight == 0)
    );
    assert!(
        matches!(p("-E -t 10.0.0.1:80 -s lc"), Command::EditService(c) if c.scheduler == SchedulerKind::Lc)
    );
    assert_eq!(p("-S -n"), Command::Save { numeric: true });
    assert_eq!(p("--save"), Command::Save { numeric: false });
    assert_eq!(p("-R"), Command::Restore);
    assert_eq!(p("-Z"), Command::Zero(None));
    assert_eq!(
        p("--zero -t 10.0.0.1:80"),
        Command::Zero(Some(tcp([10, 0, 0, 1], 80)))
    );
    assert_eq!(
        p("--set 900 120 300"),
        Command::SetTimeouts(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        })
    );
    let Command::List(o) = p("-L --timeout") else {
        panic!()
    };
    assert!(o.timeout);
    let Command::List(o) = p("-l -n --rate --nosort") else {
        panic!()
    };
    assert!(o.rate && o.nosort);
    let Command::List(o) = p("-L -n --thresholds") else {
        panic!()
    };
    assert!(o.thresholds);
    let Command::List(o) = p("-L -n --persistent-conn") else {
        panic!()
    };
    assert!(o.persistent_conn);
    assert_eq!(p("-L -n --sort"), p("-L -n"));
    assert_eq!(
        p("ipvsadm -C"),
        Command::Clear,
        "a leading program name is skipped"
    );
    assert_eq!(parse_line("   # comment").unwrap(), None);
    assert_eq!(parse_line("").unwrap(), None);
    assert_eq!(
        parse_args(&["-A", "-u", "10.0.0.1:53", "-o"]).unwrap(),
        p("-A -u 10.0.0.1:53 --ops")
    );
}

#[test]
fn option_table_errors_match_ipvsadm() {
    // commands_v_options: '+', 'x' and '1' entries, with cmdnames/optnames wording.
    assert_eq!(
        e("-A -t 10.0.0.1:80 -w 3"),
        "Illegal 'weight' option with the 'add-service' command"
    );
    assert_eq!(
        e("-A -s rr"),
        "You need to supply the 'service-address' option for the 'add-service' command"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80"),
        "You need to supply the 'real-server' option for the 'add-server' command"
    );
    assert_eq!(
        e("-d -t 10.0.0.1:80 -r 10.1.1.1 -w 2"),
        "Illegal 'weight' option with the 'delete-server' command"
    );
    assert_eq!(
        e("-E -t 10.0.0.1:80 -r 10.1.1.1"),
        "Illegal 'real-server' option with the 'edit-service' command"
    );
    assert_eq!(
        e("-C -t 10.0.0.1:80"),
        "Illegal 'service-address' option with the 'flush' command"
    );
    assert_eq!(e("-S -c"), "Illegal 'connection' option with the 'save' command");
    assert_eq!(
        e("--set 1 2 3 -n"),
        "Illegal 'numeric' option with the 'set' command"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -b sh-port"),
        "incompatible scheduler flag `sh-port'"
    );
    assert_eq!(
        e("-L -c --timeout"),
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
    );
    assert_eq!(e("-L -c --stats"), "options conflicts in the list command");
    assert_eq!(
        e("-A -t 10.0.0.1:80 -s rr -s wlc"),
        "multiple 'scheduler' options specified"
    );
    assert_eq!(
        e("-A -t 10.0.0.1:80 -m"),
        "Illegal 'forwarding-method' option with the 'add-service' command"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -m -g"),
        "multiple 'forwarding-method' options specified"
    );
    assert_eq!(e("-A -C"), "multiple commands specified");
}

#[test]
fn value_errors_match_ipvsadm() {
    assert_eq!(
        e("-A -t 10.0.0.1:80 -s foo"),
        "Scheduler or persistence engine not found"
    );
    assert_eq!(
        e("-A -t 10.0.0:80x"),
        "illegal virtual server address[:port] specified"
    );
    assert_eq!(e("-A -t 80"), "illegal virtual server address[:port] specified");
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r bogus"),
        "illegal real server address[:port] specified"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -w 65536"),
        "illegal weight specified"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -w -1"),
        "illegal weight specified"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -x z"),
        "illegal u_threshold specified"
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -y 1.5"),
        "illegal l_threshold specified"
    );
    assert_eq!(
        e("-A -t 10.0.0.1:80 -p -M 255.255.0"),
        "illegal virtual server persistent mask specified"
    );
    assert_eq!(
        e("-A -t 10.0.0.1:80 -b sh-port"),
        "incompatible scheduler flag `sh-port'"
    );
    assert_eq!(
        e("-A -t 10.0.0.1:80 -s mh -b nope"),
        "invalid scheduler flag `nope'"
    );
    assert_eq!(
        e("-A -t 10.0.0.1"),
        "Zero port specified for non-persistent service"
    );
    assert_eq!(
        e("-A -t 10.0.0.1:53 -o"),
        "One-Packet Scheduling is only for UDP virtual services"
    );
    assert_eq!(e("--set 900 120"), "--set option requires 3 timeout values");
    assert_eq!(e("--set 900 120 x"), "invalid timeout value `x' specified");
    assert_eq!(e("-C extra"), "unexpected argument extra");
    assert_eq!(e("-Q"), "-Q: unknown option");
    assert_eq!(e("--bogus"), "--bogus: unknown option");
    assert_eq!(e("-A -t"), "-t: missing argument");
    // popt's first option must be the command.
    assert_eq!(
        e("-t 10.0.0.1:80 -A"),
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information."
    );
    assert_eq!(
        e("-n"),
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information."
    );
    assert_eq!(
        e("-a -t 10.0.0.1:80 -r 10.1.1.1 -m --tun-type ipip"),
        "Tunnel options conflict with forward method"
    );
}

#[test]
fn zero_port_allowed_when_persistent_and_sched_flags_per_scheduler() {
    let Command::AddService(cfg) = p("-A -t 10.0.0.1:0 -p 120") else {
        panic!()
    };
    assert_eq!(cfg.key, tcp([10, 0, 0, 1], 0));
    let Command::AddService(cfg) = p("-A -t 10.0.0.1:80 -s mh -b mh-fallback") else {
        panic!()
    };
    assert!(cfg.sched_flags.fallback() && !cfg.sched_flags.port());
    let Command::AddService(cfg) = p("-A -t 10.0.0.1:80 -s rr -b flag-3") else {
        panic!()
    };
    assert_eq!(cfg.sched_flags, SchedFlags::FLAG3);
    // --tun-type ipip (what ipvsadm 1.31 saves for -i) is accepted on tunnel destinations.
    assert!(matches!(
        p("-a -t 10.0.0.1:80 -r 10.1.1.1:80 -i -w 1 --tun-type ipip"),
        Command::AddDest { .. }
    ));
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "-A",
                "-E",
                "-D",
                "-C",
                "-a",
                "-e",
                "-d",
                "-L",
                "-Ln",
                "-S",
                "-R",
                "-Z",
                "--set",
                "-t",
                "-u",
                "-f",
                "-6",
                "-s",
                "-p",
                "-M",
                "-r",
                "-m",
                "-g",
                "-i",
                "--fullnat",
                "-w",
                "-x",
                "-y",
                "-b",
                "-o",
                "-n",
                "-c",
                "--stats",
                "--rate",
                "--exact",
                "--timeout",
                "--tun-type",
                "rr",
                "sh",
                "sh-port,flag-3",
                "10.0.0.1:80",
                "[::1]:80",
                "[::1]",
                "::1",
                "0",
                "300",
                "255.255.255.0",
                "64",
                "-",
            ])
            .prop_map(String::from),
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_token_lists_parse_or_fail_cleanly(tokens in prop::collection::vec(token(), 0..10)) {
            // Either a command or an error message; never a panic.
            match parse_args(&tokens) {
                Ok(_) => {}
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
