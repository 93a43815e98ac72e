//! SIGHUP re-reads the --rules file all or nothing: a good file replaces the rules, a bad one
//! is refused with its line number and the running rules stay.

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};

fn listing_has(e: &E2e, needle: &str) -> bool {
    e.adm(&["-L", "-n"]).1.contains(needle)
}

fn wait_for(e: &E2e, what: &str, mut ok: impl FnMut(&E2e) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ok(e) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} within 5 s; listing:\n{}", e.adm(&["-L", "-n"]).1);
}

#[test]
fn sighup_reloads_rules_all_or_nothing() {
    if !require_root() {
        return;
    }
    let (vip, rs1, rs2) = (lab::VIP, lab::rs_ip(0), lab::rs_ip(1));
    let first = format!("-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {rs1}:8080 -m\n");
    let e = E2e::start(LabMethod::Nat, 2, "afpacket", &first, &[]);
    e.until_ok(|e| e.http(80));
    let rules = e.dir.join("rules");
    // A good file: one more destination and a UDP service.
    std::fs::write(
        &rules,
        format!("{first}-a -t {vip}:80 -r {rs2}:8080 -m\n-A -u {vip}:9000 -s wlc\n-a -u {vip}:9000 -r {rs1}:9000 -m\n"),
    )
    .unwrap();
    let hup = |e: &E2e| {
        let st = std::process::Command::new("kill")
            .args(["-HUP", &e.lvs_pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    hup(&e);
    wait_for(&e, "the reloaded rules show", |e| {
        listing_has(e, "UDP  10.77.1.100:9000 wlc")
    });
    assert!(listing_has(&e, &format!("{rs2}:8080")));
    let names: Vec<String> = (0..4).map(|_| who(&e.http(80).unwrap()).to_string()).collect();
    assert!(
        names.contains(&"rs1".to_string()) && names.contains(&"rs2".to_string()),
        "{names:?}"
    );
    // A bad file (line 2): refused, the running rules stay, the log names the line.
    std::fs::write(
        &rules,
        format!("-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {rs1}:8080 -w 99999\n"),
    )
    .unwrap();
    hup(&e);
    let log = e.dir.join("lvs.log");
    wait_for(&e, "the refusal is logged", |_| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("line 2")
    });
    assert!(
        listing_has(&e, "UDP  10.77.1.100:9000 wlc"),
        "rules unchanged after a bad reload"
    );
    assert!(listing_has(&e, &format!("{rs2}:8080")));
}
