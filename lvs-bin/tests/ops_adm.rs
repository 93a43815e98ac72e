//! ipvsadm compatibility against a live daemon: `lvs run` forwards real traffic in the lab
//! while `lvs adm` and an `lvsadm` symlink drive it with an ipvsadm command sequence; the
//! listings must be ipvsadm's text exactly, with the live ActiveConn/InActConn and Conns.

mod e2e_support;
mod ops_support;

use std::process::Command;

use e2e_support::*;
use lvs_bin::lab::{self, LabMethod};
use ops_support::*;

/// ipvsadm's column titles (`print_title`).
const COLUMNS: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// ipvsadm's `-L -n` header of a full listing (`list_all`: the version line, with the
/// connection table size, then the column titles).
fn title(size: u32) -> String {
    format!("IP Virtual Server version 1.2.1 (size={size})\n{COLUMNS}")
}

/// ipvsadm's destination line: `"  -> %-28s %-7s %-6d %-10u %-10u\n"`.
fn dest(addr: &str, fwd: &str, weight: u32, active: u32, inactive: u32) -> String {
    format!("  -> {addr:<28} {fwd:<7} {weight:<6} {active:<10} {inactive:<10}\n")
}

/// Runs the `lvsadm` symlink with `--socket` first; (code, stdout, stderr).
fn lvsadm(link: &std::path::Path, socket: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(link)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run lvsadm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ipvsadm_sequence_on_a_live_daemon_lists_like_ipvsadm() {
    if !require_root() {
        return;
    }
    let mut e = E2e::start(LabMethod::Nat, 3, "afpacket", "", &[]);
    start_line_servers(&mut e, 9100);
    let link = e.dir.join("lvsadm");
    std::os::unix::fs::symlink(lvs(), &link).unwrap();
    let sock = e.socket.clone();
    let vip = lab::VIP;
    let (s80, s9100) = (format!("{vip}:80"), format!("{vip}:9100"));
    let rs = |i: usize, p: u16| format!("{}:{p}", lab::rs_ip(i));
    let (r1, r2, r3, e1) = (rs(0, 8080), rs(1, 8080), rs(2, 8080), rs(0, 9100));

    // The sequence, half through the symlink, half through `lvs adm`.
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "stdout {out:?} stderr {err:?}");
        out
    };
    ok(lvsadm(&link, &sock, &["-A", "-t", &s80, "-s", "rr"]));
    ok(lvsadm(
        &link,
        &sock,
        &["-a", "-t", &s80, "-r", &r1, "-m", "-w", "2"],
    ));
    ok(e.adm(&["-a", "-t", &s80, "-r", &r2, "-m"]));
    ok(e.adm(&[
        "--add-server",
        "--tcp-service",
        &s80,
        "--real-server",
        &r3,
        "--masquerading",
        "--weight",
        "0",
    ]));
    ok(lvsadm(&link, &sock, &["-A", "-t", &s9100, "-s", "wlc"]));
    ok(e.adm(&["-a", "-t", &s9100, "-r", &e1, "-m"]));
    ok(lvsadm(&link, &sock, &["-E", "-t", &s9100, "-s", "lc"]));
    // ipvsadm's refusals: exit 255 and libipvs's message.
    let (code, _, err) = lvsadm(&link, &sock, &["-A", "-t", &s80, "-s", "rr"]);
    assert_eq!((code, err.as_str()), (255, "Service already exists\n"));
    let (code, _, err) = e.adm(&["-d", "-t", &s80, "-r", "10.77.2.99:8080"]);
    assert_eq!((code, err.as_str()), (255, "No such destination\n"));

    // Live traffic: 4 HTTP connections (rr over rs1 and rs2: rs3 has weight 0), and one
    // long-lived connection to the line service.
    e.until_ok(|e| e.http(80));
    for _ in 0..3 {
        e.http(80).expect("http");
    }
    let hold_log = e.dir.join("hold.log");
    let holder = start_hold(&mut e, 9100, 20, &hold_log);
    assert_eq!(holder, "rs1");

    let size = 1 << 20;
    let want = format!(
        "{}TCP  {s80} rr\n{}{}{}TCP  {s9100} lc\n{}",
        title(size),
        dest(&r1, "Masq", 2, 0, 2),
        dest(&r2, "Masq", 1, 0, 2),
        dest(&r3, "Masq", 0, 0, 0),
        dest(&e1, "Masq", 1, 1, 0),
    );
    assert!(
        wait_until(5, || lvsadm(&link, &sock, &["-L", "-n"]).1 == want),
        "lvsadm -L -n:\n{}\nwant:\n{want}",
        lvsadm(&link, &sock, &["-L", "-n"]).1
    );
    assert_eq!(ok(e.adm(&["-l", "-n"])), want, "lvs adm -l -n");
    // One service (`list_service`: no version line).
    assert_eq!(
        ok(e.adm(&["-L", "-n", "-t", &s80])),
        format!(
            "{COLUMNS}TCP  {s80} rr\n{}{}{}",
            dest(&r1, "Masq", 2, 0, 2),
            dest(&r2, "Masq", 1, 0, 2),
            dest(&r3, "Masq", 0, 0, 0)
        )
    );
    // -S: the rules as ipvsadm-save writes them.
    assert_eq!(
        ok(lvsadm(&link, &sock, &["-S", "-n"])),
        format!(
            "-A -t {s80} -s rr\n-a -t {s80} -r {r1} -m -w 2\n-a -t {s80} -r {r2} -m -w 1\n\
             -a -t {s80} -r {r3} -m -w 0\n-A -t {s9100} -s lc\n-a -t {s9100} -r {e1} -m -w 1\n"
        )
    );
    // --stats: the Conns column counts every scheduled connection.
    let stats = ok(e.adm(&["-L", "-n", "--stats", "--exact"]));
    let conns = |addr: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == addr))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{addr} in\n{stats}"))
    };
    assert_eq!(
        (conns(&s80), conns(&r1), conns(&r2), conns(&r3), conns(&s9100)),
        (4, 2, 2, 0, 1),
        "{stats}"
    );
    // -L -c: the connection entries, four closed HTTP ones and the long-lived one.
    let c = ok(e.adm(&["-L", "-n", "-c"]));
    assert_eq!(c.lines().filter(|l| l.contains("TIME_WAIT")).count(), 4, "{c}");
    assert_eq!(c.lines().filter(|l| l.contains("ESTABLISHED")).count(), 1, "{c}");
    assert!(c.contains(&format!("{}:", lab::CLIENT_IP)), "{c}");

    // -Z zeroes the counters, -d and -D remove, -C clears.
    ok(lvsadm(&link, &sock, &["-Z", "-t", &s80]));
    let stats = ok(e.adm(&["-L", "-n", "--stats", "--exact", "-t", &s80]));
    let svc_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap().to_string();
    assert_eq!(svc_line.split_whitespace().nth(2), Some("0"), "{stats}");
    ok(e.adm(&["-d", "-t", &s80, "-r", &r3]));
    ok(lvsadm(&link, &sock, &["-D", "-t", &s9100]));
    assert_eq!(
        ok(e.adm(&["-L", "-n"])),
        format!(
            "{}TCP  {s80} rr\n{}{}",
            title(size),
            dest(&r1, "Masq", 2, 0, 2),
            dest(&r2, "Masq", 1, 0, 2)
        )
    );
    ok(lvsadm(&link, &sock, &["-C"]));
    assert_eq!(ok(e.adm(&["-L", "-n"])), title(size));
    e.stop();
}
