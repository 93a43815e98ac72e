//! RuleSet semantics: the kernel's answers (libipvs `ipvs_strerror` texts), list order, and
//! all-or-nothing restore batches.

use std::net::IpAddr;

use lvs_core::rules::{BatchError, Outcome, RuleError, RuleSet, Timeouts, parse_line};
use lvs_core::{DestConfig, Protocol, SchedulerKind, ServiceKey, ServiceTable};

fn tcp(a: [u8; 4], port: u16) -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: IpAddr::from(a),
        port,
    }
}

fn run(rs: &mut RuleSet, line: &str) -> Result<Outcome, RuleError> {
    rs.apply_line(line).map(|o| o.expect("a command"))
}

fn dest_addrs(rs: &RuleSet, key: &ServiceKey) -> Vec<IpAddr> {
    rs.service(key).unwrap().dests.iter().map(|d| d.addr).collect()
}

#[test]
fn add_dest_inserts_at_the_front_and_edit_keeps_place() {
    let mut rs = RuleSet::new();
    run(&mut rs, "-A -t 10.0.0.1:80 -s rr").unwrap();
    for ip in ["192.168.1.1", "192.168.1.2", "192.168.1.3"] {
        run(&mut rs, &format!("-a -t 10.0.0.1:80 -r {ip} -m")).unwrap();
    }
    let key = tcp([10, 0, 0, 1], 80);
    let ips = |v: [&str; 3]| v.map(|s| s.parse::<IpAddr>().unwrap()).to_vec();
    assert_eq!(
        dest_addrs(&rs, &key),
        ips(["192.168.1.3", "192.168.1.2", "192.168.1.1"])
    );
    run(&mut rs, "-e -t 10.0.0.1:80 -r 192.168.1.2 -m -w 7").unwrap();
    assert_eq!(
        dest_addrs(&rs, &key),
        ips(["192.168.1.3", "192.168.1.2", "192.168.1.1"])
    );
    assert_eq!(rs.service(&key).unwrap().dests[1].weight, 7);
    run(&mut rs, "-d -t 10.0.0.1:80 -r 192.168.1.3").unwrap();
    assert_eq!(rs.service(&key).unwrap().dests.len(), 2);
}

#[test]
fn edit_service_replaces_settings_but_keeps_destinations() {
    let mut rs = RuleSet::new();
    run(&mut rs, "-A -t 10.0.0.1:80 -s rr -p 60").unwrap();
    run(&mut rs, "-a -t 10.0.0.1:80 -r 192.168.1.1 -m").unwrap();
    // Like ipvsadm -E, omitted options go back to defaults (wlc, not persistent).
    run(&mut rs, "-E -t 10.0.0.1:80").unwrap();
    let svc = rs.service(&tcp([10, 0, 0, 1], 80)).unwrap();
    assert_eq!(svc.scheduler, SchedulerKind::Wlc);
    assert_eq!(svc.persistence, None);
    assert_eq!(svc.dests.len(), 1);
}

#[test]
fn kernel_errors_with_ipvsadm_wording() {
    let mut rs = RuleSet::new();
    let msg = |r: Result<Outcome, RuleError>| r.unwrap_err().to_string();
    assert_eq!(msg(run(&mut rs, "-E -t 10.0.0.1:80")), "No such service");
    assert_eq!(msg(run(&mut rs, "-D -t 10.0.0.1:80")), "No such service");
    assert_eq!(msg(run(&mut rs, "-Z -t 10.0.0.1:80")), "No such service");
    assert_eq!(msg(run(&mut rs, "-L -n -t 10.0.0.1:80")), "No such service");
    assert_eq!(
        msg(run(&mut rs, "-a -t 10.0.0.1:80 -r 192.168.1.1")),
        "Service not defined"
    );
    assert_eq!(
        msg(run(&mut rs, "-e -t 10.0.0.1:80 -r 192.168.1.1")),
        "Service not defined"
    );
    assert_eq!(
        msg(run(&mut rs, "-d -t 10.0.0.1:80 -r 192.168.1.1")),
        "Service not defined"
    );
    run(&mut rs, "-A -t 10.0.0.1:80").unwrap();
    assert_eq!(
        msg(run(&mut rs, "-A -t 10.0.0.1:80 -s rr")),
        "Service already exists"
    );
    assert_eq!(
        msg(run(&mut rs, "-e -t 10.0.0.1:80 -r 192.168.1.1")),
        "No such destination"
    );
    assert_eq!(
        msg(run(&mut rs, "-d -t 10.0.0.1:80 -r 192.168.1.1")),
        "No such destination"
    );
    run(&mut rs, "-a -t 10.0.0.1:80 -r 192.168.1.1").unwrap();
    assert_eq!(
        msg(run(&mut rs, "-a -t 10.0.0.1:80 -r 192.168.1.1 -w 5")),
        "Destination already exists"
    );
    // ip_vs_add_dest: lower threshold above upper -> ERANGE, printed by strerror.
    assert_eq!(
        msg(run(&mut rs, "-a -t 10.0.0.1:80 -r 192.168.1.2 -y 5")),
        "Numerical result out of range"
    );
    assert_eq!(
        msg(run(&mut rs, "-a -t 10.0.0.1:80 -r 224.0.0.1")),
        "Invalid operation.  Possibly wrong module version, address not unicast, ..."
    );
    // Nothing above changed the rule set beyond the two successful commands.
    assert_eq!(rs.services.len(), 1);
    assert_eq!(
        rs.services[0].dests,
        vec![DestConfig::new([192, 168, 1, 1].into(), 80)]
    );
}

#[test]
fn non_rule_commands_return_their_effect() {
    let mut rs = RuleSet::new();
    run(&mut rs, "-A -t 10.0.0.1:80").unwrap();
    assert_eq!(run(&mut rs, "-Z").unwrap(), Outcome::Zero(None));
    assert_eq!(
        run(&mut rs, "-Z -t 10.0.0.1:80").unwrap(),
        Outcome::Zero(Some(tcp([10, 0, 0, 1], 80)))
    );
    assert_eq!(
        run(&mut rs, "--set 10 20 30").unwrap(),
        Outcome::SetTimeouts(Timeouts {
            tcp: 10,
            tcp_fin: 20,
            udp: 30
        })
    );
    assert_eq!(run(&mut rs, "-S -n").unwrap(), Outcome::Save { numeric: true });
    assert!(matches!(run(&mut rs, "-L -n").unwrap(), Outcome::List(o) if o.numeric));
    assert_eq!(run(&mut rs, "-C").unwrap(), Outcome::Changed);
    assert!(rs.services.is_empty());
}

#[test]
fn batch_commits_only_when_every_line_succeeds() {
    let mut rs = RuleSet::new();
    rs.apply_batch("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m\n")
        .unwrap();
    let before = rs.clone();

    let err = rs
        .apply_batch("-C\n-A -t 10.0.0.2:80 -s rr\n-a -t 10.0.0.3:80 -r 192.168.1.9:80 -m\n")
        .unwrap_err();
    assert_eq!(err.to_string(), "line 3: Service not defined");
    assert_eq!(err.line, 3);
    assert_eq!(rs, before, "a failed batch leaves the rule set untouched");

    let err = rs
        .apply_batch("# saved rules\n\n-A -t 10.0.0.2:80 -s foo\n")
        .unwrap_err();
    assert_eq!(
        err,
        BatchError {
            line: 3,
            error: RuleError::Parse(lvs_core::rules::ParseError(
                "Scheduler or persistence engine not found".into()
            ))
        }
    );
    assert_eq!(
        err.to_string(),
        "line 3: Scheduler or persistence engine not found"
    );
    let err = rs
        .apply_batch("-A -t 10.0.0.5:80\n-A -t 10.0.0.5:80 -w 2\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: Illegal 'weight' option with the 'add-service' command"
    );
    assert_eq!(rs, before);

    let effects = rs
        .apply_batch("-Z\n-A -t 10.0.0.2:80 -s rr\n--set 900 120 300\n")
        .unwrap();
    assert_eq!(effects.len(), 2);
    assert_eq!(rs.services.len(), 2);
    assert_eq!(rs.apply_batch("-R\n").unwrap_err().line, 1);
}

#[test]
fn ruleset_publishes_into_a_service_table() {
    let mut rs = RuleSet::new();
    rs.apply_batch("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m\n-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m\n")
        .unwrap();
    let table = ServiceTable::new();
    let set = table.publish(&rs.services);
    let svc = set
        .lookup(Protocol::Tcp, [10, 0, 0, 1].into(), 80)
        .expect("published");
    let order: Vec<IpAddr> = svc.dests.iter().map(|d| d.config.addr).collect();
    assert_eq!(
        order,
        vec![IpAddr::from([192, 168, 1, 2]), IpAddr::from([192, 168, 1, 1])]
    );
    assert!(parse_line("-A -t 10.0.0.1:80").unwrap().is_some());
}
