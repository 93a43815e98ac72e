//! Health checks on a live lab: an HTTP_GET check quiesces a real server whose HTTP listener
//! died (weight 0 in `lvs adm -L -n`, no new connections to it) and restores it when the
//! listener is back.

mod e2e_support;
mod ops_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};
use ops_support::*;

#[test]
fn http_check_quiesces_a_dead_server_and_restores_it_afpacket() {
    check_round("afpacket");
}

#[test]
fn http_check_quiesces_a_dead_server_and_restores_it_afxdp() {
    check_round("afxdp");
}

fn check_round(backend: &str) {
    if !require_root() {
        return;
    }
    let vip = lab::VIP;
    let rs = |i: usize| format!("{}:8080", lab::rs_ip(i));
    let rules = format!(
        "-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {} -m\n-a -t {vip}:80 -r {} -m\n-a -t {vip}:80 -r {} -m\n",
        rs(0),
        rs(1),
        rs(2)
    );
    let cfg = std::env::temp_dir().join(format!("lvs-ops-health-{}-{backend}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "[[check]]\nservice = \"-t {vip}:80\"\ntype = \"http_get\"\npath = \"/\"\nexpect = \"rs\"\n\
             interval = 0.2\ntimeout = 0.5\nrise = 2\nfall = 2\n"
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    // With AF_XDP the checks' answers (RIP:8080 → DIP) must reach the director's kernel,
    // not lvs: the XDP program passes frames addressed to the host's own addresses.
    let mut e = E2e::start(LabMethod::Nat, 3, backend, &rules, &["-c", &cfg_s]);
    let _ = std::fs::remove_file(&cfg);
    e.until_ok(|e| e.http(80));
    let names: Vec<String> = (0..6).map(|_| who(&e.http(80).unwrap()).to_string()).collect();
    for n in ["rs1", "rs2", "rs3"] {
        assert_eq!(
            names.iter().filter(|x| *x == n).count(),
            2,
            "rr over 3: {names:?}"
        );
    }

    // rs2's HTTP listener dies: the only process in its namespace is its lvs testsrv.
    let rs2_ns = e.lab.servers[1].clone();
    let pids = netns_pids(&rs2_ns);
    let srv = *pids
        .iter()
        .find(|p| cmdline(**p).contains("testsrv"))
        .unwrap_or_else(|| panic!("no testsrv in {rs2_ns}: {pids:?}"));
    e.lab.kill(srv);
    assert!(
        wait_until(10, || dest_row(&e, &rs(1)).is_some_and(|r| r.0 == 0)),
        "rs2 not quiesced: {}",
        e.adm(&["-L", "-n"]).1
    );
    // Quiesced, not removed; the others keep their weight.
    assert_eq!(dest_row(&e, &rs(0)).map(|r| r.0), Some(1));
    assert_eq!(dest_row(&e, &rs(2)).map(|r| r.0), Some(1));
    let names: Vec<String> = (0..8)
        .map(|_| who(&e.http(80).expect("http while rs2 is down")).to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n == "rs2"),
        "rs2 still got new connections: {names:?}"
    );
    assert_eq!(names.iter().filter(|n| *n == "rs1").count(), 4, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "rs3").count(), 4, "{names:?}");

    // The listener comes back: after `rise` good checks rs2 has its weight again.
    e.lab
        .spawn(
            &rs2_ns,
            lvs(),
            &["testsrv", "--name", "rs2", "--http", "0.0.0.0:8080"],
        )
        .unwrap();
    assert!(
        wait_until(10, || dest_row(&e, &rs(1)).is_some_and(|r| r.0 == 1)),
        "rs2 not restored: {}",
        e.adm(&["-L", "-n"]).1
    );
    let names: Vec<String> = (0..6).map(|_| who(&e.http(80).unwrap()).to_string()).collect();
    for n in ["rs1", "rs2", "rs3"] {
        assert_eq!(
            names.iter().filter(|x| *x == n).count(),
            2,
            "traffic back on rs2: {names:?}"
        );
    }
    let log = std::fs::read_to_string(e.dir.join("lvs.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("health check: {} in -t {vip}:80 failed", rs(1))),
        "{log}"
    );
    assert!(
        log.contains(&format!("health check: {} in -t {vip}:80 is up again", rs(1))),
        "{log}"
    );
    e.stop();
}
