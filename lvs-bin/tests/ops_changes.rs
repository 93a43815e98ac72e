//! Changing the rules under load: while a long-lived TCP connection exchanges a line every
//! 100 ms and new connections keep arriving, `lvs adm -e` changes weights and `lvs adm -d`
//! removes the long-lived connection's real server. The long-lived connection keeps working
//! on its server (as with kernel IPVS, whose connections hold their destination), and new
//! connections follow the new rules at once.

mod e2e_support;
mod ops_support;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};
use ops_support::*;

const PORT: u16 = 9100;

#[test]
fn rule_changes_spare_the_long_lived_connection_afxdp() {
    rule_changes_under_load("afxdp");
}

#[test]
fn rule_changes_spare_the_long_lived_connection_afpacket() {
    rule_changes_under_load("afpacket");
}

/// With the afxdp backend this also pins that a removed real server stays steered to lvs
/// while it has connections (its replies must still be translated).
fn rule_changes_under_load(backend: &str) {
    if !require_root() {
        return;
    }
    let vip = lab::VIP;
    let svc = format!("{vip}:{PORT}");
    let rs = |i: usize| format!("{}:{PORT}", lab::rs_ip(i));
    let rules = format!(
        "-A -t {svc} -s wrr\n-a -t {svc} -r {} -m\n-a -t {svc} -r {} -m\n-a -t {svc} -r {} -m\n",
        rs(0),
        rs(1),
        rs(2)
    );
    let mut e = E2e::start(LabMethod::Nat, 3, backend, &rules, &[]);
    start_line_servers(&mut e, PORT);
    e.until_ok(|e| {
        let target = format!("{}:{PORT}", lab::VIP);
        e.lab
            .exec(
                &e.lab.client,
                &[
                    lvs(),
                    "lab-client",
                    "--target",
                    &target,
                    "--proto",
                    "line",
                    "--count",
                    "1",
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|err| err.to_string())
    });

    let hold_log = e.dir.join("hold.log");
    let holder = start_hold(&mut e, PORT, 8, &hold_log);
    let h: usize = holder.trim_start_matches("rs").parse::<usize>().unwrap() - 1;
    let others: Vec<usize> = (0..3).filter(|&i| i != h).collect();
    let (a, b) = (others[0], others[1]);
    let name = |i: usize| format!("rs{}", i + 1);
    // Equal weights: wrr spreads 30 new connections 10/10/10.
    let c = batch(&e, PORT, "line", 30);
    for i in 0..3 {
        assert_eq!(c.get(&name(i)), Some(&10), "equal weights: {c:?}");
    }

    // Quiesce the long-lived connection's server and triple another one's weight.
    for (i, w) in [(h, "0"), (a, "3")] {
        let (code, _, err) = e.adm(&["-e", "-t", &svc, "-r", &rs(i), "-m", "-w", w]);
        assert_eq!(code, 0, "lvs adm -e: {err}");
    }
    let c = batch(&e, PORT, "line", 40);
    assert_eq!(c.get(&name(h)), None, "weight 0 gets no new connection: {c:?}");
    assert_eq!(c.get(&name(a)), Some(&30), "weights 3:1 over 40: {c:?}");
    assert_eq!(c.get(&name(b)), Some(&10), "weights 3:1 over 40: {c:?}");
    // The long-lived connection is still counted active on its quiesced server.
    let (w, active, _) = dest_row(&e, &rs(h)).expect("holder listed");
    assert_eq!((w, active), (0, 1), "{}", e.adm(&["-L", "-n"]).1);

    // Remove it: gone from the listing; new connections go to the other two.
    let (code, _, err) = e.adm(&["-d", "-t", &svc, "-r", &rs(h)]);
    assert_eq!(code, 0, "lvs adm -d: {err}");
    assert_eq!(dest_row(&e, &rs(h)), None, "{}", e.adm(&["-L", "-n"]).1);
    let c = batch(&e, PORT, "line", 40);
    assert_eq!(c.get(&name(h)), None, "removed server got new connections: {c:?}");
    assert_eq!(
        (c.get(&name(a)), c.get(&name(b))),
        (Some(&30), Some(&10)),
        "{c:?}"
    );

    // The long-lived connection answered every line from its server to the end.
    let verdict = hold_verdict(&hold_log, 15);
    assert!(
        verdict.starts_with(&format!("HOLD OK {holder} ")),
        "long-lived connection: {verdict:?}\n{}",
        std::fs::read_to_string(&hold_log).unwrap_or_default()
    );
    let lines: u64 = verdict.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(lines >= 40, "only {lines} lines in 8 s");
    e.stop();
}
