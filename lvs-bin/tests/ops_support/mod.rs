//! Helpers of the operations tests (on top of `e2e_support`): reading `lvs adm -L -n`,
//! counting who answered a batch of new connections, starting line servers and long-lived
//! connections in the lab.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::e2e_support::{E2e, lvs};
use lvs_bin::lab;

/// The fields after the address of the `  -> ADDR ...` line of `addr` in a listing.
pub fn dest_fields(listing: &str, addr: &str) -> Option<Vec<String>> {
    listing.lines().find_map(|l| {
        let rest = l.strip_prefix("  -> ")?;
        let mut it = rest.split_whitespace();
        (it.next()? == addr).then(|| it.map(str::to_string).collect())
    })
}

/// (Weight, ActiveConn, InActConn) of `addr` in `lvs adm -L -n`, None if it is not listed.
pub fn dest_row(e: &E2e, addr: &str) -> Option<(u32, u64, u64)> {
    let (code, out, err) = e.adm(&["-L", "-n"]);
    assert_eq!(code, 0, "lvs adm -L -n: {err}");
    let f = dest_fields(&out, addr)?;
    Some((f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?))
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `n` new connections from the client to `VIP:port` (`lvs lab-client`, back to back);
/// how many each server answered. Every request must be answered.
pub fn batch(e: &E2e, port: u16, proto: &str, n: u32) -> BTreeMap<String, u32> {
    let target = format!("{}:{port}", lab::VIP);
    let out = e
        .lab
        .exec(
            &e.lab.client,
            &[
                lvs(),
                "lab-client",
                "--target",
                &target,
                "--proto",
                proto,
                "--count",
                &n.to_string(),
            ],
        )
        .unwrap_or_else(|err| panic!("{n} requests to {target}: {err}"));
    let mut counts = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        *counts
            .entry(l.split_whitespace().next().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Starts `lvs echosrv` (a line echo server named rsN) on port `port` of every real server.
pub fn start_line_servers(e: &mut E2e, port: u16) {
    let listen = format!("0.0.0.0:{port}");
    for (i, ns) in e.lab.servers.clone().iter().enumerate() {
        e.lab
            .spawn(
                ns,
                lvs(),
                &["echosrv", "--name", &format!("rs{}", i + 1), "--listen", &listen],
            )
            .unwrap();
    }
}

/// Starts a long-lived connection from the client to `VIP:port` that exchanges a line every
/// 100 ms for `secs` seconds, logging to `log`; returns the name of the server it landed on.
pub fn start_hold(e: &mut E2e, port: u16, secs: u32, log: &Path) -> String {
    let target = format!("{}:{port}", lab::VIP);
    let client = e.lab.client.clone();
    e.lab
        .spawn_logged(
            &client,
            lvs(),
            &[
                "lab-client",
                "--hold",
                "--target",
                &target,
                "--seconds",
                &secs.to_string(),
            ],
            log,
        )
        .unwrap();
    let mut holder = String::new();
    let ok = wait_until(10, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("HOLD START ")) {
            holder = l["HOLD START ".len()..].trim().to_string();
            true
        } else {
            false
        }
    });
    assert!(
        ok,
        "the long-lived connection did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    holder
}

/// Waits for the long-lived connection's verdict line (`HOLD OK ...` / `HOLD FAIL ...`).
pub fn hold_verdict(log: &Path, secs: u64) -> String {
    let mut verdict = String::new();
    wait_until(secs, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        match text
            .lines()
            .find(|l| l.starts_with("HOLD OK") || l.starts_with("HOLD FAIL"))
        {
            Some(l) => {
                verdict = l.to_string();
                true
            }
            None => false,
        }
    });
    verdict
}

/// Pids of the processes in network namespace `ns`.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The command line of process `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}
